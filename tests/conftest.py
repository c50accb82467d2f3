"""Shared test settings: deterministic, single-threaded-friendly torch on CPU; shared fixtures."""

import os

import pytest
import torch

#: the procedural planes of the planes tests: 10 planes × 6 poses at 32×32 on 6 skies
SMALL_PLANES = dict(n_planes=10, n_poses=6, size=32, n_skies=6, supersample=2)

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def small_planes(tmp_path_factory):
    """Rendered once for every planes test (cached in a folder of its own)."""
    from groupact.data.planes import load_planes
    old = os.environ.get("GROUPACT_CACHE")
    os.environ["GROUPACT_CACHE"] = str(tmp_path_factory.mktemp("planes-cache"))
    try:
        return load_planes(**SMALL_PLANES)
    finally:
        if old is None:
            os.environ.pop("GROUPACT_CACHE", None)
        else:
            os.environ["GROUPACT_CACHE"] = old
