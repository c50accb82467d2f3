"""Real aircraft on real skies: the AC3D reader, textured rendering, sky crops, the Debian source
(on tiny files the tests write: the packages are not on CI), the swap metric and the
rendering net's axis convention."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from groupact.data.ac3d import find_texture, load_texture_atlas, read_ac
from groupact.data.planes import (PosePairs, debian_model_files, load_planes,
                                  load_planes_debian, read_sky_crops)
from groupact.data.render import render
from groupact.groups.rotations3d import axis_angle_to_matrix, haar_rotations
from groupact.errors import DataError

# a two-level model: a textured quad in 'body' (loc shifts it) with a kid 'fin' (a triangle,
# red material, its own loc added to the parent's), a line surface (skipped) and a shadow
# object (skipped by name)
AC = """AC3Db
MATERIAL "white" rgb 1 1 1  amb 0.2 0.2 0.2  emis 0 0 0  spec 0.5 0.5 0.5  shi 10  trans 0
MATERIAL "red" rgb 1 0 0  amb 0.2 0.2 0.2  emis 0 0 0  spec 0.5 0.5 0.5  shi 10  trans 0.25
OBJECT world
kids 2
OBJECT poly
name "body"
data 9
some
data
texture "tex.png"
texrep 2 1
loc 1 0 0
numvert 4
-1 -1 0
1 -1 0
1 1 0
-1 1 0
numsurf 2
SURF 0x10
mat 0
refs 4
0 0 0
1 1 0
2 1 1

3 0 1
SURF 0x2
mat 0
refs 2
0 0 0
1 0 0
kids 1
OBJECT poly
name "fin"
loc 0 0 2
numvert 3
0 0 0
0 1 0
0 0 1
numsurf 1
SURF 0x30
mat 1
refs 3
0 0 0
1 0 0
2 0 0
kids 0
OBJECT poly
name "Shadow"
numvert 3
0 0 0
1 0 0
0 1 0
numsurf 1
SURF 0x10
mat 0
refs 3
0 0 0
1 0 0
2 0 0
kids 0
"""


def axis_angle(axis, angle: float) -> torch.Tensor:
    """One rotation (3, 3) about ``axis`` by ``angle`` radians (right-hand rule)."""
    return axis_angle_to_matrix(torch.tensor([axis], dtype=torch.float32),
                                torch.tensor([angle], dtype=torch.float32))[0]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GROUPACT_CACHE", str(tmp_path / "cache"))


def _write_model(folder, name="plane.ac", texture=True):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(AC)
    if texture:   # left half green, right half blue
        img = np.zeros((8, 8, 3), np.uint8)
        img[:, :4, 1] = 255
        img[:, 4:, 2] = 255
        Image.fromarray(img).save(folder / "tex.png")
    return folder / name


def test_read_ac_objects_kids_transforms_materials_and_fans(tmp_path):
    m = read_ac(_write_model(tmp_path))
    # quad → 2 fan triangles, fin → 1; the line and the shadow object are skipped
    assert m.faces.shape == (3, 3) and m.vertices.shape == (7, 3)
    assert m.faces.tolist() == [[0, 1, 2], [0, 2, 3], [4, 5, 6]]
    # body moved by its loc (1, 0, 0); the fin by its own (0, 0, 2) plus its parent's
    assert torch.allclose(m.vertices[0], torch.tensor([0.0, -1.0, 0.0]))
    assert torch.allclose(m.vertices[4:], torch.tensor([[1.0, 0, 2], [1, 1, 2], [1, 0, 3]]))
    assert m.colors.tolist() == [[1, 1, 1], [1, 1, 1], [1, 0, 0]]
    assert torch.allclose(m.alpha, torch.tensor([1.0, 1.0, 0.75]))
    assert m.textures == ["tex.png"] and m.tex_id.tolist() == [0, 0, -1]
    # texrep 2 1 scales u: the corner (1, 1) becomes (2, 1)
    assert m.uv[0].tolist() == [[0, 0], [2, 0], [2, 1]]


def test_read_ac_rot_is_applied_before_loc(tmp_path):
    text = AC.replace('loc 1 0 0\n', 'rot 0 1 0  -1 0 0  0 0 1\nloc 1 0 0\n')
    p = tmp_path / "r.ac"
    p.write_text(text)
    m = read_ac(p)
    # v @ rot + loc: (-1, -1, 0) @ rot = (1, -1, 0), + (1, 0, 0)
    assert torch.allclose(m.vertices[0], torch.tensor([2.0, -1.0, 0.0]))


@pytest.mark.parametrize("text", ["", "hello\n", "AC3Db\nOBJECT world\nkids 0\n",
                                  "AC3Db\nOBJECT poly\nnumvert 2\n0 0 0\n",
                                  "AC3Db\nOBJECT poly\nnumvert 1\n0 x 0\nkids 0\n",
                                  "AC3Db\nOBJECT poly\nnumvert 3\n0 0 0\n1 0 0\n0 1 0\n"
                                  "numsurf 1\nSURF 0x10\nmat 0\nrefs 3\n0 0 0\n1 0 0\n7 0 0\n"
                                  "kids 0\n"])
def test_read_ac_errors(tmp_path, text):
    p = tmp_path / "bad.ac"
    p.write_text(text)
    with pytest.raises(DataError):
        read_ac(p)


def test_textures_are_found_in_flightgear_livery_folders(tmp_path):
    model = _write_model(tmp_path / "A320" / "Models", texture=False)
    livery = tmp_path / "A320" / "Textures" / "ZZAir"
    livery.mkdir(parents=True)
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(livery / "tex.png")
    assert find_texture(model, "tex.png") == livery / "tex.png"
    atlas, found = load_texture_atlas(model, ["tex.png", "missing.png"], 4)
    assert found.tolist() == [True, False]
    assert torch.allclose(atlas[0], torch.full((3, 4, 4), 200 / 255))


def test_textured_render_samples_the_texture():
    # a square facing the camera, uv (0,0) at the lower left; texture left green, right blue
    v = torch.tensor([[-1.0, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]])
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uv = torch.tensor([[[0.0, 0], [1, 0], [1, 1]], [[0, 0], [1, 1], [0, 1]]])
    atlas = torch.zeros(1, 3, 8, 8)
    atlas[0, 1, :, :4] = 1
    atlas[0, 2, :, 4:] = 1
    img = render(v, f, torch.ones(2, 3), torch.eye(3)[None], size=16, supersample=1,
                 scale=0.9, uv=uv, tex_id=torch.zeros(2, dtype=torch.int64), atlas=atlas,
                 ambient=1.0, specular=0.0)[0]
    assert img[3, 2:14, 2:14].min() == 1  # covered (scale 0.9 leaves a border)
    left, right = img[:3, 8, 3], img[:3, 8, 12]
    assert left[1] > 0.9 and left[2] < 0.1 and right[2] > 0.9 and right[1] < 0.1
    # untextured faces keep their colour
    plain = render(v, f, torch.ones(2, 3) * 0.5, torch.eye(3)[None], size=16, supersample=1,
                   uv=uv, tex_id=torch.full((2,), -1), atlas=atlas, ambient=1.0, specular=0)
    assert torch.allclose(plain[0, :3, 8, 8], torch.full((3,), 0.5))


def _write_sky(path, colour=(60, 120, 230)):
    img = np.zeros((64, 64, 3), np.uint8)
    img[:] = colour
    img[40:] = (40, 120, 40)          # ground below the horizon
    Image.fromarray(img).save(path, format="SGI")


def test_sky_crops_read_sgi_and_stay_above_the_horizon(tmp_path):
    _write_sky(tmp_path / "skybox_n.rgb")
    _write_sky(tmp_path / "skybox_u.rgb", (200, 200, 255))
    skies, groups = read_sky_crops([tmp_path / "skybox_n.rgb", tmp_path / "skybox_u.rgb"], 5, 8)
    assert skies.shape == (10, 3, 8, 8) and skies.dtype == np.uint8
    assert groups.tolist() == [0] * 5 + [1] * 5
    assert (skies[:5, 1] == 120).all() and (skies[:5, 2] == 230).all()   # no ground in side crops


def _debian_tree(tmp_path):
    fg = tmp_path / "fg" / "AI" / "Aircraft"
    for name in ("A320", "B737", "C172"):
        _write_model(fg / name / "Models", f"{name}.ac")
    _write_model(fg / "A320" / "Models" / "lights", "GreenLight.ac")   # not an aircraft
    crrc = tmp_path / "crrc"
    _write_model(crrc / "objects", "glider.ac")
    _write_model(crrc / "objects", "hut.ac")                           # not an aircraft
    (crrc / "textures").mkdir(parents=True)
    for face in "nesw":
        _write_sky(crrc / "textures" / f"skybox_{face}.rgb")
    _write_sky(crrc / "textures" / "skybox_u.rgb", (90, 140, 250))
    return fg, crrc


def test_debian_source_finds_renders_caches_and_splits(tmp_path):
    fg, crrc = _debian_tree(tmp_path)
    files, labels = debian_model_files(fg, crrc)
    assert [f.name for f in files] == ["A320.ac", "B737.ac", "C172.ac", "glider.ac"]
    assert labels == [0, 0, 0, 1]
    data = load_planes_debian(n_poses=5, size=16, sky_crops_per_face=3, fg_dir=fg,
                              crrc_dir=crrc)
    assert data["rgba"].shape == (4, 5, 4, 16, 16) and data["skies"].shape == (15, 3, 16, 16)
    assert data["sky_groups"].tolist() == sorted([0, 1, 2, 3, 4] * 3)
    assert (data["rgba"][:, :, 3] > 0).any()
    # the cache returns the same arrays
    again = load_planes_debian(n_poses=5, size=16, sky_crops_per_face=3, fg_dir=fg,
                               crrc_dir=crrc)
    assert np.array_equal(again["rgba"], data["rgba"])


def test_debian_splits_hold_out_planes_and_a_sky_photograph(tmp_path, monkeypatch):
    fg, crrc = _debian_tree(tmp_path)
    monkeypatch.setenv("GROUPACT_FLIGHTGEAR_AI", str(fg))
    monkeypatch.setenv("GROUPACT_CRRCSIM", str(crrc))
    s = load_planes(n_planes=None, n_poses=4, size=16, source="debian")
    assert s.info["name"] == "planes-debian" and not s.info["stand_in"]
    objs = [set(p.extras["object"].tolist()) for p in (s.train, s.val, s.test)]
    assert not (objs[0] & objs[2]) and not (objs[1] & objs[2]) and len(objs[2]) == 1
    assert "by photograph" in s.info["sky_split"]
    assert len(s.test.extras["skies"]) == 40       # one face of five, 40 crops


def test_missing_packages_name_the_install_step(tmp_path):
    with pytest.raises(DataError, match="apt-get install flightgear-data-ai crrcsim-data"):
        load_planes_debian(fg_dir=tmp_path / "nope", crrc_dir=tmp_path / "nope2")


def test_missing_packages_cli_says_one_line(tmp_path, monkeypatch, capsys):
    from groupact.cli import main
    monkeypatch.setenv("GROUPACT_FLIGHTGEAR_AI", str(tmp_path / "a"))
    monkeypatch.setenv("GROUPACT_CRRCSIM", str(tmp_path / "b"))
    code = main(["train", "planes-so3-debian", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("groupact: error:") and "apt-get install" in err[0]


# --- the swap metric --------------------------------------------------------------------------
class _Identity(torch.nn.Module):
    def forward(self, x):
        return x


def _stub_model(variant):
    """An 'autoencoder' whose latent is the image itself, 3 channels of H×W maps, and a fixed
    mask: the swap then mixes the images channel by channel."""
    from groupact.groups import build_group
    from groupact.latent import FixedMask, build_action
    from groupact.model import GroupActionAutoencoder
    g = build_group("c4")
    return GroupActionAutoencoder(_Identity(), _Identity(), g, FixedMask(3, variant),
                                  build_action("spatial", g))


def test_swap_psnr_by_hand():
    from groupact.evaluate.evaluate import swap_metrics
    from groupact.evaluate.metrics import psnr
    # two planes × 2 views, 8×8; plane 0 a red square, plane 1 a green one; 3 skies
    rgba = torch.zeros(4, 4, 8, 8)
    rgba[:2, 0, 2:5, 2:5] = 1
    rgba[2:, 1, 3:7, 3:7] = 1
    rgba[:2, 3, 2:5, 2:5] = 1
    rgba[2:, 3, 3:7, 3:7] = 1
    from groupact.data.base import TensorSet
    skies = torch.stack([torch.full((3, 8, 8), v) for v in (0.2, 0.5, 0.8)])
    split = TensorSet(rgba, torch.zeros(4, dtype=torch.int64), {
        "pose": torch.eye(3).expand(4, 3, 3).clone(), "object": torch.tensor([0, 0, 1, 1]),
        "view": torch.tensor([0, 1, 0, 1]), "skies": skies})
    src = PosePairs()
    a, b, sa, sb = src.swap_indices(split, 6, torch.Generator().manual_seed(0))
    assert bool((split.extras["object"][a] != split.extras["object"][b]).all())
    assert bool((sa != sb).all())
    xa, xb, truth = src.swap_pairs(split, 6, torch.Generator().manual_seed(0))
    # truth by hand: A's colour where A's alpha is 1, B's sky elsewhere
    alpha = rgba[a, 3:4]
    by_hand = rgba[a, :3] * alpha + skies[sb] * (1 - alpha)
    assert torch.allclose(truth, by_hand)
    # a mask with no variant channel decodes B itself; all variant decodes A itself
    m0 = swap_metrics(_stub_model([]), src, split, 6, 0)
    m1 = swap_metrics(_stub_model([0, 1, 2]), src, split, 6, 0)
    assert m0["swap_psnr"] == pytest.approx(m0["swap_psnr_column"])
    assert m1["swap_psnr"] == pytest.approx(m1["swap_psnr_row"])
    assert m0["swap_psnr_column"] == pytest.approx(float(psnr(xb, truth).mean()))


def test_orbit_gives_the_other_views_of_one_plane():
    from groupact.data.base import TensorSet
    poses = haar_rotations(6, torch.Generator().manual_seed(1))
    split = TensorSet(torch.rand(6, 4, 8, 8), None, {
        "pose": poses, "object": torch.tensor([0, 0, 0, 1, 1, 1]),
        "view": torch.arange(6) % 3, "skies": torch.rand(2, 3, 8, 8)})
    x0, truth, g = PosePairs().orbit(split, 1, 8)
    assert x0.shape[0] == truth.shape[0] == g.shape[0] == 2
    assert torch.allclose(g[0] @ poses[1], poses[0], atol=1e-5)
    assert torch.allclose(g[1] @ poses[1], poses[2], atol=1e-5)


# --- the rendering net --------------------------------------------------------------------------
def test_render_volume_layout_turns_with_the_camera_frame():
    """A turn g in the camera frame (x right, y up, z to the viewer), applied to the net's
    volume by the library's SO(3) action, moves content the way the renderer does."""
    from groupact.groups.rotations3d import rotate_volumes
    from groupact.nets.rendering import from_camera_layout, to_camera_layout
    v = torch.zeros(1, 1, 16, 16, 16)       # (depth, row, col) as the inverse projection makes
    v[0, 0, 8, 8, 13] = 1                   # right of centre
    out = from_camera_layout(rotate_volumes(to_camera_layout(v), axis_angle([0, 0, 1],
                                                                            math.pi / 2)[None]))
    d, r, c = (out[0, 0] == out[0, 0].max()).nonzero()[0].tolist()
    assert c == 8 and r < 5                 # +90° about z: right → up (smaller row)
    v = torch.zeros(1, 1, 16, 16, 16)
    v[0, 0, 13, 8, 8] = 1                   # towards the viewer
    out = from_camera_layout(rotate_volumes(to_camera_layout(v), axis_angle([0, 1, 0],
                                                                            math.pi / 2)[None]))
    d, r, c = (out[0, 0] == out[0, 0].max()).nonzero()[0].tolist()
    assert c > 11 and r == 8                # +90° about y: z → x (right)
    # the renderer agrees: +90° about z turns a point right of centre to above it
    tri = torch.tensor([[0.6, -0.05, 0], [0.8, -0.05, 0], [0.7, 0.1, 0]])
    img = render(tri, torch.tensor([[0, 1, 2]]), torch.ones(1, 3),
                 axis_angle([0, 0, 1], math.pi / 2)[None], size=16, supersample=1)[0, 3]
    rows, cols = img.nonzero(as_tuple=True)
    assert rows.float().mean() < 5 and abs(cols.float().mean() - 7.5) < 2


def test_render_volume_shapes_and_composite():
    from groupact.nets import NetSpec, build_nets
    enc, dec = build_nets("render-volume", NetSpec((3, 32, 32), channels=4, widths=(8,)))
    x = torch.rand(2, 3, 32, 32)
    torch.set_grad_enabled(False)
    try:
        z = enc(x)
    finally:
        torch.set_grad_enabled(True)
    assert z.shape == (2, 8, 8, 8, 8)
    with torch.no_grad():
        rgb, alpha, sky = dec.parts(z)
        out = dec(z)
    assert torch.allclose(out, alpha * rgb + (1 - alpha) * sky)
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    # the background channels decode the sky alone: zeroing the volumes leaves it unchanged
    z2 = z.clone()
    z2[:, :4] = 0
    with torch.no_grad():
        assert torch.allclose(dec.parts(z2)[2], sky)
