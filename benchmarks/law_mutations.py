"""Mutation check of the law tests: break one law in a copy of the package, run the law tests
(tests/test_laws.py, tests/test_composition_order.py) and the older group/latent tests, and print
which of them fail.

    python benchmarks/law_mutations.py          # from the repository root; copies HEAD to a temp dir
    python benchmarks/law_mutations.py M12 M13  # only the mutations named
"""

import pathlib
import subprocess
import sys
import tempfile

work = tempfile.mkdtemp(prefix="groupact-mut-")
subprocess.run(f"git archive HEAD | tar -x -C {work}", shell=True, check=True)
root = pathlib.Path(work)
M = [
 ("M1 transposed MatrixAction", "src/groupact/latent/actions.py", 'torch.einsum("bij,bcj->bci", rho, z)', 'torch.einsum("bji,bcj->bci", rho, z)'),
 ("M2 SO3.compose b@a", "src/groupact/groups/rotations3d.py", "    def compose(self, a, b):\n        return a @ b", "    def compose(self, a, b):\n        return b @ a"),
 ("M3 cube Cayley table transposed", "src/groupact/groups/rotations3d.py", "self.index_of(mats[:, None] @ mats[None])", "self.index_of(mats[None] @ mats[:, None])"),
 ("M4 rotate_images clockwise", "src/groupact/groups/planar.py", "inv = torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1)], -2)", "inv = torch.stack([torch.stack([c, s, zero], -1), torch.stack([-s, c, zero], -1)], -2)"),
 ("M5 rotation_matrix_2d transposed", "src/groupact/groups/planar.py", "torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)", "torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)"),
 ("M6 steerable action mirrored", "src/groupact/latent/steerable.py", "turned = torch.stack([c * re - s * im, s * re + c * im], -1)", "turned = torch.stack([c * re + s * im, -s * re + c * im], -1)"),
 ("M7 rotate_volumes inverse turn", "src/groupact/groups/rotations3d.py", "inv_xyz = r.transpose(-1, -2).flip(-1).flip(-2)", "inv_xyz = r.flip(-1).flip(-2)"),
 ("M8 shift matrix sign", "src/groupact/groups/planar.py", "theta = g.to(torch.float32) * (2 * math.pi / self.m)", "theta = -g.to(torch.float32) * (2 * math.pi / self.m)"),
 ("M9 contrast compose swapped", "src/groupact/groups/contrast.py", "return torch.stack([a1 * a2, a1 * b2 + b1], -1)", "return torch.stack([a1 * a2, a2 * b1 + b2], -1)"),
 ("M10 SO3 matrix transposed", "src/groupact/groups/rotations3d.py", "    def matrix(self, g):\n        return g.to(torch.float32)", "    def matrix(self, g):\n        return g.to(torch.float32).transpose(-1, -2)"),
 ("M11 spatial act_map off by one pixel", "src/groupact/groups/base.py", "        return self.act_image(z, g)", "        return torch.roll(self.act_image(z, g), 1, -1)"),
 ("M12 homomorphism_error order swapped", "src/groupact/evaluate/evaluate.py", "once = model.action(zv, group.compose(a, b))", "once = model.action(zv, group.compose(b, a))"),
 ("M13 both-mode pairs T_{g1.g}", "src/groupact/data/pairs.py", "x2 = self.group.act_image(x, self.group.compose(g, g1))", "x2 = self.group.act_image(x, self.group.compose(g1, g))"),
]
chosen = sys.argv[1:]
M = [m for m in M if not chosen or m[0].split()[0] in chosen]
laws = ["tests/test_laws.py", "tests/test_composition_order.py"]
old = ["tests/test_latent.py", "tests/test_groups_planar.py", "tests/test_groups_3d.py"]
for name, f, a, b in M:  # each mutation alone, restored afterwards
    p = root / f; s = p.read_text()
    assert s.count(a) == 1, (name, s.count(a))
    p.write_text(s.replace(a, b))
    try:
        res = {}
        for label, tests in (("law tests", laws), ("old group/latent tests", old)):
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                               cwd=root, env={"PYTHONPATH": str(root / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
                               capture_output=True, text=True)
            last = [l for l in r.stdout.splitlines() if "passed" in l or "failed" in l or "error" in l.lower()]
            caught = [l.split()[1].split("::")[-1] for l in r.stdout.splitlines() if l.startswith("FAILED")]
            res[label] = (last[-1] if last else r.stdout[-300:]) + (f" caught by {caught}" if caught else "")
        print(name, "|", res, flush=True)
    finally:
        p.write_text(s)
