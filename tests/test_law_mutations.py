"""Mutation check of the law tests: each listed mutation breaks one law in a copy of the package,
and the law tests (tests/test_laws.py, tests/test_composition_order.py) must fail on it.

A law test that still passes with a transposed matrix or a swapped composition checks nothing;
this file is the proof that each of these mistakes is caught, and by which test. The three
composition-order mutations run in the default suite (about 20 s); the rest are ``slow``::

    python -m pytest -m slow tests/test_law_mutations.py -rA -s   # every mutation, its catchers
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAW_TESTS = ["tests/test_laws.py", "tests/test_composition_order.py"]

#: (name, file under src/groupact, the exact original text, its mutation); order-only ones first
MUTATIONS = [
    ("M2 SO3.compose b@a", "groups/rotations3d.py",
     "    def compose(self, a, b):\n        return a @ b",
     "    def compose(self, a, b):\n        return b @ a"),
    ("M12 homomorphism_error order swapped", "evaluate/evaluate.py",
     "once = model.action(zv, group.compose(a, b))",
     "once = model.action(zv, group.compose(b, a))"),
    ("M13 both-mode pairs T_{g1.g}", "data/pairs.py",
     "x2 = self.group.act_image(x, self.group.compose(g, g1))",
     "x2 = self.group.act_image(x, self.group.compose(g1, g))"),
    ("M1 transposed MatrixAction", "latent/actions.py",
     'torch.einsum("bij,bcj->bci", rho, z)', 'torch.einsum("bji,bcj->bci", rho, z)'),
    ("M3 cube Cayley table transposed", "groups/rotations3d.py",
     "self.index_of(mats[:, None] @ mats[None])", "self.index_of(mats[None] @ mats[:, None])"),
    ("M4 rotate_images clockwise", "groups/planar.py",
     "inv = torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1)], -2)",
     "inv = torch.stack([torch.stack([c, s, zero], -1), torch.stack([-s, c, zero], -1)], -2)"),
    ("M5 rotation_matrix_2d transposed", "groups/planar.py",
     "torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)",
     "torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)"),
    ("M6 steerable action mirrored", "latent/steerable.py",
     "turned = torch.stack([c * re - s * im, s * re + c * im], -1)",
     "turned = torch.stack([c * re + s * im, -s * re + c * im], -1)"),
    ("M7 rotate_volumes inverse turn", "groups/rotations3d.py",
     "inv_xyz = r.transpose(-1, -2).flip(-1).flip(-2)", "inv_xyz = r.flip(-1).flip(-2)"),
    ("M8 shift matrix sign", "groups/planar.py",
     "theta = g.to(torch.float32) * (2 * math.pi / self.m)",
     "theta = -g.to(torch.float32) * (2 * math.pi / self.m)"),
    ("M9 contrast compose swapped", "groups/contrast.py",
     "return torch.stack([a1 * a2, a1 * b2 + b1], -1)",
     "return torch.stack([a1 * a2, a2 * b1 + b2], -1)"),
    ("M10 SO3 matrix transposed", "groups/rotations3d.py",
     "    def matrix(self, g):\n        return g.to(torch.float32)",
     "    def matrix(self, g):\n        return g.to(torch.float32).transpose(-1, -2)"),
    ("M11 spatial act_map off by one pixel", "groups/base.py",
     "        return self.act_image(z, g)",
     "        return torch.roll(self.act_image(z, g), 1, -1)"),
]
#: the composition-order mistakes: cheap to check and the easiest to make
DEFAULT = {"M2", "M12", "M13"}


def mutated_package(tmp: Path, file: str, original: str, mutation: str) -> Path:
    """A copy of ``src/groupact`` under ``tmp`` with one text replaced (which must occur once)."""
    src = tmp / "src"
    shutil.copytree(ROOT / "src" / "groupact", src / "groupact",
                    ignore=shutil.ignore_patterns("__pycache__"))
    path = src / "groupact" / file
    text = path.read_text(encoding="utf-8")
    assert text.count(original) == 1, f"{file}: the original text is not there once; update " \
                                      "the mutation to the code"
    path.write_text(text.replace(original, mutation), encoding="utf-8")
    return src


def failing_law_tests(src: Path) -> list[str]:
    """The law tests that fail with the package at ``src`` first on the path (checked)."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import groupact; print(groupact.__file__)"],
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(src)), where        # the mutated copy is what the tests import
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-m", "not slow", *LAW_TESTS], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    return [line.split()[1].split("::", 1)[-1] for line in r.stdout.splitlines()
            if line.startswith(("FAILED", "ERROR"))]


@pytest.mark.parametrize("name,file,original,mutation", [
    pytest.param(*m, id=m[0].split()[0],
                 marks=() if m[0].split()[0] in DEFAULT else pytest.mark.slow)
    for m in MUTATIONS])
def test_the_law_tests_catch_the_mutation(tmp_path, name, file, original, mutation):
    caught = failing_law_tests(mutated_package(tmp_path, file, original, mutation))
    print(f"\n{name}: caught by {caught}")
    assert caught, f"{name}: every law test passed with the law broken"


def test_the_unmutated_copy_passes(tmp_path):
    """The check itself: the same copy without a mutation fails no law test."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "groupact", src / "groupact",
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert failing_law_tests(src) == []
