"""Planes in the sky: mesh files (trimesh), the rasteriser, the procedural stand-in and pose pairs."""

import math

import numpy as np
import pytest
import torch

from groupact.data.airplanes import FAMILIES, make_airplane
from groupact.data.mesh import MESH_SUFFIXES, normalize_mesh, read_mesh, write_mesh
from groupact.data.planes import PosePairs, generate_planes, load_planes, make_skies
from groupact.data.render import composite, rasterize, render
from groupact.groups.rotations3d import axis_angle_to_matrix, haar_rotations
from groupact.errors import DataError

from conftest import SMALL_PLANES as SMALL


def axis_angle(axis, angle: float) -> torch.Tensor:
    """One rotation (3, 3) about ``axis`` by ``angle`` radians (right-hand rule)."""
    return axis_angle_to_matrix(torch.tensor([axis], dtype=torch.float32),
                                torch.tensor([angle], dtype=torch.float32))[0]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GROUPACT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def splits(small_planes):
    return small_planes


# --- mesh files (trimesh) -------------------------------------------------------------------------
def _triangles(v, f):
    """A mesh's triangles as a set of vertex-coordinate triples, each turned to start at its
    smallest corner (so the set is free of vertex order and of where a fan starts)."""
    out = set()
    for tri in v[f].tolist():
        k = min(range(3), key=lambda i: tri[i])
        out.add(tuple(map(tuple, tri[k:] + tri[:k])))
    return out


def test_obj_quad_negative_indices_and_slashes(tmp_path):
    p = tmp_path / "m.obj"
    p.write_text("# a quad\nmtllib x.mtl\no quad\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\n"
                 "vt 0 0\nvn 0 0 1\nusemtl red\ns off\n"
                 "f 1/1/1 2/1/1 3/1/1 4/1/1\n"
                 "v 0 0 1\nf -1 -4 -3\nf 5//1 1//1 2//1\n")
    v, f, colors = read_mesh(p)
    assert v.dtype == torch.float32 and f.dtype == torch.int64 and f.shape == (4, 3)
    c = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]]   # the file's vertices, 0-based
    want = torch.tensor(c, dtype=torch.float32)
    # the quad as a fan of two, and the two triangles through the fifth vertex (−1 ≡ 5, −4 ≡ 2)
    assert _triangles(v, f) == _triangles(want, torch.tensor([[0, 1, 2], [0, 2, 3], [4, 1, 2],
                                                                [4, 0, 1]]))
    assert colors is None


@pytest.mark.parametrize("text", ["", "hello world\n", "v 0 0 0\nv 1 0 0\nv 0 1 0\n",
                                  "v 0 0 0\nv 1 0 0\nf 1 2 3\n", "v 0 0 x\nf 1 1 1\n",
                                  "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2\n", "\x00\x01\x02{}<>\n"])
def test_mesh_errors_are_data_errors(tmp_path, text):
    p = tmp_path / "bad.obj"
    p.write_text(text)
    with pytest.raises(DataError, match="bad.obj"):
        read_mesh(p)


def test_mesh_unreadable_or_unknown_format(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_mesh(tmp_path / "missing.obj")
    p = tmp_path / "bin.obj"
    p.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(DataError):
        read_mesh(p)
    (tmp_path / "m.xyz").write_text("v 0 0 0\n")
    with pytest.raises(DataError, match="unknown format '.xyz'"):
        read_mesh(tmp_path / "m.xyz")


@pytest.mark.parametrize("suffix", MESH_SUFFIXES)
def test_every_format_reads_back_the_same_triangles(tmp_path, suffix):
    """ShapeNet .obj, ModelNet .off, .stl, .ply, .glb/.gltf: one airplane written and read back."""
    m = make_airplane(1, torch.Generator().manual_seed(3))
    path = tmp_path / f"p{suffix}"
    write_mesh(path, m.vertices, m.faces)
    v, f, _ = read_mesh(path)
    assert f.shape == m.faces.shape
    rounded = lambda t: (t * 1e4).round() / 1e4          # .stl stores float32, text formats 6 digits
    assert _triangles(rounded(v), f) == _triangles(rounded(m.vertices), m.faces)


@pytest.mark.parametrize("suffix", [".ply", ".glb", ".obj"])
def test_a_files_colours_are_kept(tmp_path, suffix):
    m = make_airplane(0, torch.Generator().manual_seed(1))
    path = tmp_path / f"p{suffix}"
    write_mesh(path, m.vertices, m.faces, m.colors)
    _, f, colors = read_mesh(path)
    assert colors is not None and colors.shape == (f.shape[0], 3)
    # vertex-coloured formats average a face's corners; each face of one part shares a colour
    assert (colors - m.colors.mean(0)).abs().max() < 1.0 and colors.std(0).max() > 0.01
    if suffix == ".ply":   # face colours stored as they are (to 1/255)
        assert torch.allclose(colors, m.colors, atol=1 / 255 + 1e-6)


def test_normalize(tmp_path):
    m = make_airplane(1, torch.Generator().manual_seed(3))
    v = m.vertices
    n = normalize_mesh(v * 7 + torch.tensor([3.0, -2.0, 1.0]))
    assert n.norm(dim=1).max() == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose((n.amin(0) + n.amax(0)) / 2, torch.zeros(3), atol=1e-5)


# --- rasteriser ---------------------------------------------------------------------------------
def _inside(tri2d, H, W):
    """Analytic inside test at pixel centres, and a mask of pixels too close to an edge to call."""
    yy, xx = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    signs, near = [], torch.zeros(H, W, dtype=torch.bool)
    for k in range(3):
        a, b = tri2d[k], tri2d[(k + 1) % 3]
        e = (b[0] - a[0]) * (yy - a[1]) - (b[1] - a[1]) * (xx - a[0])
        signs.append(e)
        near |= e.abs() / (b - a).norm() < 1e-3
    s = torch.stack(signs)
    return (s >= 0).all(0) | (s <= 0).all(0), near


def test_single_triangle_covers_expected_pixels():
    H, W = 20, 24
    tri = torch.tensor([[2.3, 1.7, 0.0], [21.6, 5.2, 0.5], [6.1, 18.4, -0.3]])
    face, depth = rasterize(tri[None, None], H, W)
    want, near = _inside(tri[:, :2], H, W)
    got = face[0] == 0
    assert bool(got.any()) and bool((~got).any())
    assert torch.equal(got[~near], want[~near])
    assert torch.isinf(depth[0][~got]).all()
    # the depth is the plane through the three vertices
    assert float(depth[0][got].max()) <= 0.5 + 1e-5 and float(depth[0][got].min()) >= -0.3 - 1e-5


def test_nearer_triangle_wins():
    H = W = 16
    a = torch.tensor([[1.0, 1.0, 0.2], [15.0, 2.0, 0.2], [3.0, 15.0, 0.2]])
    b = torch.tensor([[14.5, 14.0, 0.7], [2.0, 3.0, 0.7], [14.0, 1.5, 0.7]])  # nearer: larger z
    for order, near_id in (((a, b), 1), ((b, a), 0)):
        face, depth = rasterize(torch.stack(order)[None], H, W)
        in_a, _ = _inside(a[:, :2], H, W)
        in_b, _ = _inside(b[:, :2], H, W)
        both = in_a & in_b
        assert int(both.sum()) > 10
        assert (face[0][both] == near_id).all()
        assert torch.allclose(depth[0][both], torch.full_like(depth[0][both], 0.7))


def test_render_shapes_alpha_and_pose_convention():
    m = make_airplane(0, torch.Generator().manual_seed(0))
    R = haar_rotations(3, torch.Generator().manual_seed(1))
    img = render(m.vertices, m.faces, m.colors, R, size=32, supersample=2)
    assert img.shape == (3, 4, 32, 32) and img.dtype == torch.float32
    assert 0 <= float(img.min()) and float(img.max()) <= 1
    alpha = img[:, 3]
    assert bool((alpha == 0).any()) and bool((alpha == 1).any())
    assert bool(((alpha > 0) & (alpha < 1)).any())  # anti-aliased edges
    # rotating the mesh by R, then rendering at the identity, is rendering with pose R
    moved = render(m.vertices[None] @ R.transpose(1, 2), m.faces, m.colors,
                   torch.eye(3).expand(3, 3, 3), size=32, supersample=2)
    assert torch.allclose(moved, img, atol=1e-5)


def _silhouette(m, R, size=33):
    return render(m.vertices, m.faces, m.colors, R, size=size, supersample=1)[:, 3]


def test_turns_about_the_view_axis_turn_the_image():
    m = make_airplane(3, torch.Generator().manual_seed(5))
    R = haar_rotations(2, torch.Generator().manual_seed(2))
    base = _silhouette(m, R)
    half = _silhouette(m, axis_angle([0, 0, 1], math.pi) @ R)
    quarter = _silhouette(m, axis_angle([0, 0, 1], math.pi / 2) @ R)
    n = base[0].numel()
    # 180° about the view axis: the image flipped both ways (ties at edges may differ)
    assert (half != base.flip(-1, -2)).sum() <= 0.005 * n * 2
    # +90° (x towards y, right towards up) turns the picture counter-clockwise
    assert (quarter != torch.rot90(base, 1, dims=(-2, -1))).sum() <= 0.005 * n * 2
    assert (base != base.flip(-1, -2)).sum() > 0.02 * n  # the check is not vacuous


def test_lambert_shading_faces_the_light():
    # a square facing the camera, tilted towards or away from the light (upper left)
    v = torch.tensor([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.5, 0.5, 0.0], [-0.5, 0.5, 0.0]])
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    c = torch.ones(2, 3) * 0.8
    towards = axis_angle([0, 1, 0], -0.6)  # normal turns to −x (towards the light)
    away = axis_angle([0, 1, 0], 0.6)
    img = render(v, f, c, torch.stack([towards, away]), size=16, supersample=1)
    centre = img[:, :3, 8, 8].mean(1)
    assert float(centre[0]) > float(centre[1]) + 0.05


# --- the stand-in -------------------------------------------------------------------------------
def test_generate_planes_deterministic_and_well_formed():
    kw = dict(n_planes=6, n_poses=4, size=24, n_skies=3, seed=4)
    a = generate_planes(**kw, cache=False)
    b = generate_planes(**kw, cache=False)
    c = generate_planes(**{**kw, "seed": 5}, cache=False)
    for k in ("rgba", "poses", "labels", "skies"):
        assert np.array_equal(a[k], b[k]), k
    assert not np.array_equal(a["rgba"], c["rgba"])
    assert a["rgba"].shape == (6, 4, 4, 24, 24) and a["rgba"].dtype == np.uint8
    assert a["poses"].shape == (6, 4, 3, 3) and a["poses"].dtype == np.float32
    assert a["labels"].shape == (6,) and set(a["labels"].tolist()) == set(range(len(FAMILIES)))
    assert a["skies"].shape == (3, 3, 24, 24) and a["skies"].dtype == np.uint8
    alpha = a["rgba"][:, :, 3]
    assert (alpha == 0).any() and (alpha == 255).any()
    R = torch.from_numpy(a["poses"]).reshape(-1, 3, 3)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand_as(R), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(len(R)), atol=1e-5)
    # a smaller set is a prefix of a larger one (plane p depends on (seed, p) only)
    small = generate_planes(**{**kw, "n_planes": 2}, cache=False)
    assert np.array_equal(small["rgba"], a["rgba"][:2])


def test_generate_planes_uses_the_cache(tmp_path):
    kw = dict(n_planes=2, n_poses=2, size=16, n_skies=2)
    a = generate_planes(**kw)
    files = list((tmp_path / "cache").glob("*.npz"))
    assert len(files) == 1
    b = generate_planes(**kw)
    assert np.array_equal(a["rgba"], b["rgba"])


def test_skies_vary_and_are_blue_at_the_top():
    s = torch.from_numpy(make_skies(8, 32, seed=1)).float()
    assert s.shape == (8, 3, 32, 32)
    assert float((s[:, 2, :4] - s[:, 0, :4]).mean()) > 20  # bluer than red near the zenith
    assert float((s[:, None] - s[None]).abs().mean()) > 5  # not all the same


def test_splits_by_plane_and_sky(splits):
    info = splits.info
    assert info["name"] == "planes-synthetic" and info["stand_in"] is True
    objs = [set(part.extras["object"].tolist()) for part in (splits.train, splits.val,
                                                             splits.test)]
    assert not (objs[0] & objs[1]) and not (objs[0] & objs[2]) and not (objs[1] & objs[2])
    assert len(objs[0] | objs[1] | objs[2]) == SMALL["n_planes"]
    assert len(objs[2]) == 2 and len(objs[1]) == 1
    for part in (splits.train, splits.val, splits.test):
        n = len(part)
        assert part.images.shape == (n, 4, 32, 32) and part.labels.shape == (n,)
        assert part.extras["pose"].shape == (n, 3, 3) and part.extras["object"].shape == (n,)
    tr = splits.train.extras["skies"].reshape(len(splits.train.extras["skies"]), -1)
    te = splits.test.extras["skies"].reshape(len(splits.test.extras["skies"]), -1)
    assert torch.cdist(tr, te).min() > 0  # test skies are unseen


@pytest.mark.parametrize("labels", [np.arange(40) % 5, np.arange(10) % 5,
                                    np.array([0] * 12 + [1] * 8), np.array([0] * 30 + [1, 2, 3]),
                                    np.arange(7) % 5])
def test_plane_split_is_stratified_by_class(labels):
    from groupact.data.planes.splits import _cut, _cut_by_class
    P = len(labels)
    classes, counts = np.unique(labels, return_counts=True)
    for seed in range(6):
        tr, va, te = _cut_by_class(labels, 0.1, 0.2, torch.Generator().manual_seed(seed))
        ref = _cut(P, 0.1, 0.2, torch.Generator().manual_seed(seed), "planes")
        assert [len(x) for x in (tr, va, te)] == [len(x) for x in ref]  # the same split sizes
        allp = torch.cat([tr, va, te])
        assert sorted(allp.tolist()) == list(range(P))  # disjoint and complete
        in_test = np.array([(labels[te.numpy()] == c).sum() for c in classes])
        share = len(te) * counts / P
        # proportional shares: a class with room for a test plane has one
        assert np.all(np.abs(in_test - share) < 1 + 1e-9) and np.all(in_test >= np.floor(share))
        for c, n in zip(classes, counts):
            if n >= 2:
                assert (labels[tr.numpy()] == c).any()  # and keeps a training plane
    a = _cut_by_class(labels, 0.1, 0.2, torch.Generator().manual_seed(3))
    b = _cut_by_class(labels, 0.1, 0.2, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # seeded


def test_the_default_planes_cover_every_family_in_test():
    """The recipe's 40 planes: a plain random cut (split seed 0) tested only 3 of the 5 families."""
    from groupact.data.planes.splits import _cut, _cut_by_class
    labels = np.arange(40) % len(FAMILIES)
    _, _, te = _cut_by_class(labels, 0.1, 0.2, torch.Generator().manual_seed(0))
    assert set(labels[te.numpy()].tolist()) == set(range(len(FAMILIES)))
    _, _, old = _cut(40, 0.1, 0.2, torch.Generator().manual_seed(0), "planes")
    assert len(set(labels[old.numpy()].tolist())) < len(FAMILIES)  # what the stratification fixes


def test_stratify_false_is_the_plain_random_cut():
    """`data.stratify: false` cuts the planes at random (groupact 0.4.0's split)."""
    import dataclasses
    from groupact.config import DataConfig
    from groupact.data import load_data
    from groupact.data.planes.splits import _cut
    cfg = DataConfig(kind="planes", n_items=SMALL["n_planes"], n_poses=SMALL["n_poses"],
                     size=SMALL["size"])
    old = load_data(dataclasses.replace(cfg, stratify=False))
    _, _, te = _cut(SMALL["n_planes"], 0.1, 0.2, torch.Generator().manual_seed(0), "planes")
    assert sorted(set(old.test.extras["object"].tolist())) == te.tolist()
    assert old.info["plane_split"] == "random"
    assert load_data(cfg).info["plane_split"] == "stratified by class"


def test_pose_pairs(splits):
    part = splits.train
    src = PosePairs()
    idx = torch.arange(len(part))
    b = src.pairs(part, idx, torch.Generator().manual_seed(0), non_identity=True)
    n = len(idx)
    assert b.x1.shape == (n, 3, 32, 32) and b.x2.shape == (n, 3, 32, 32) and b.g.shape == (n, 3, 3)
    assert torch.equal(b.labels, part.labels)
    g = b.g
    assert torch.allclose(g @ g.transpose(1, 2), torch.eye(3).expand_as(g), atol=1e-5)
    assert torch.allclose(torch.linalg.det(g), torch.ones(n), atol=1e-5)
    # g·R1 is the pose of another view (never the same one) of the same plane, and x2 is that view
    R1 = part.extras["pose"][idx]
    target = g @ R1
    d = (target[:, None] - part.extras["pose"][None]).abs().flatten(2).amax(2)  # (n, N)
    j = d.argmin(1)
    assert float(d.min(1).values.max()) < 1e-5
    assert torch.equal(part.extras["object"][j], part.extras["object"][idx])
    assert not bool((j == idx).any())
    assert torch.allclose(g, part.extras["pose"][j] @ R1.transpose(1, 2), atol=1e-6)
    # both images sit on the same sky: equal wherever neither view covers the pixel
    a1, a2 = part.images[idx, 3:], part.images[j, 3:]
    empty = ((a1 == 0) & (a2 == 0)).expand_as(b.x1)
    assert torch.allclose(b.x1[empty], b.x2[empty])
    # … and that sky is one of the split's skies, the same one under both views
    skies = part.extras["skies"]
    for k in range(0, n, 7):
        m = empty[k]
        err = (skies[:, m] - b.x1[k][m]).abs().amax(1)
        assert float(err.min()) < 1e-6
        s = int(err.argmin())
        assert torch.allclose(b.x2[k], composite(part.images[j[k]][None], skies[s][None])[0],
                              atol=1e-6)
    # seeded: the same generator seed gives the same pairs
    b2 = src.pairs(part, idx, torch.Generator().manual_seed(0), non_identity=True)
    assert torch.equal(b.x2, b2.x2) and torch.equal(b.g, b2.g)


def test_pose_pairs_without_non_identity_stay_on_the_plane(splits):
    part = splits.test
    idx = torch.arange(len(part)).repeat(4)
    b = PosePairs().pairs(part, idx, torch.Generator().manual_seed(1))
    target = b.g @ part.extras["pose"][idx]
    d = (target[:, None] - part.extras["pose"][None]).abs().flatten(2).amax(2)
    j = d.argmin(1)
    assert float(d.min(1).values.max()) < 1e-5
    assert torch.equal(part.extras["object"][j], part.extras["object"][idx])


def test_views(splits):
    part = splits.val
    src = PosePairs()
    idx = torch.tensor([0, 3, 5])
    v0 = src.views(part, idx)
    want = composite(part.images[idx], part.extras["skies"][:1])
    assert torch.allclose(v0, want)
    v1 = src.views(part, idx, torch.Generator().manual_seed(3))
    assert v1.shape == (3, 3, 32, 32)
    cover = part.images[idx, 3:] == 1
    assert torch.allclose(v1[cover.expand_as(v1)], v0[cover.expand_as(v0)])
    assert getattr(splits, "pair_source")(None).__class__ is PosePairs


def test_pose_pairs_need_rendered_splits():
    from groupact.data.base import TensorSet
    with pytest.raises(DataError):
        PosePairs().pairs(TensorSet(torch.zeros(2, 4, 8, 8)), torch.arange(2))


# --- the real-format path ------------------------------------------------------------------------
def _write_tetra(path, stretch):
    v = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float32) * stretch
    write_mesh(path, v, torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]))


def test_load_planes_folder(tmp_path):
    from PIL import Image
    meshes = tmp_path / "meshes"
    for cls, k in (("jet", 3), ("prop", 2)):
        (meshes / cls).mkdir(parents=True)
        for i in range(k):
            stretch = torch.tensor([1.0 + i, 1.0, 0.5 + (cls == "jet")])
            suffix = (".obj", ".off", ".ply")[i]   # the formats ShapeNet, ModelNet and scans use
            _write_tetra(meshes / cls / f"m{i}{suffix}", stretch)
    (meshes / "prop" / "notes.txt").write_text("not a mesh")
    skies = tmp_path / "skies"
    skies.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(skies / f"s{i}.png")
    Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(skies / "s3.jpg")
    sp = load_planes(mesh_dir=meshes, sky_dir=skies, n_poses=4, size=16)
    assert sp.info["name"] == "planes-folder" and sp.info["stand_in"] is False
    assert sp.info["classes"] == ["jet", "prop"]
    assert sp.info["n_planes"] == 5 and sp.info["n_skies"] == 4
    labels = torch.cat([sp.train.labels, sp.val.labels, sp.test.labels])
    assert sorted(labels.tolist()) == [0] * 12 + [1] * 8
    assert sp.train.images.shape[1:] == (4, 16, 16)
    b = PosePairs().pairs(sp.test, torch.arange(len(sp.test)), torch.Generator().manual_seed(0),
                          non_identity=True)
    assert b.x1.shape == (len(sp.test), 3, 16, 16)
    with pytest.raises(DataError):
        load_planes(mesh_dir=tmp_path / "nowhere")
    with pytest.raises(DataError):
        load_planes(mesh_dir=meshes, sky_dir=tmp_path / "no-skies", n_poses=2, size=8)
