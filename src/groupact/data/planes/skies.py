"""Skies for the planes: procedural ones (gradient, soft fractal clouds, sun glow), a folder of
photographs, and crops of crrcsim's skybox photographs (cropped above their horizon)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from groupact.errors import DataError


#: the photograph formats read as skies (and by the folder of meshes' companions)
IMAGE_EXTS = {".png", ".jpg", ".jpeg"}


def _fractal_noise(n: int, height: int, width: int, gen: torch.Generator, base: int = 3,
                   octaves: int = 5, stretch: float = 2.0) -> Tensor:
    """(n, 1, H, W) smooth value noise in about [0, 1], stretched horizontally."""
    out = torch.zeros(n, 1, height, width)
    total = 0.0
    for k in range(octaves):
        rh = base * 2 ** k
        rw = max(2, int(round(rh * stretch)))
        grid = torch.rand(n, 1, rh + 1, rw + 1, generator=gen)
        amp = 0.5 ** k
        out += amp * F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=True)
        total += amp
    return (out / total).clamp(0, 1)


def make_skies(n: int, size: int, seed: int = 0) -> np.ndarray:
    """n procedural skies (n, 3, size, size) uint8: a zenith→horizon gradient (blue to pale, some
    hazy or sunset-tinted), soft fractal clouds of random cover and a sun glow at a random place."""
    if n <= 0:
        raise DataError(f"n_skies must be positive, got {n}")
    gen = torch.Generator().manual_seed(7_919 + 1_000_003 * int(seed))
    H = W = int(size)

    def u(lo, hi, shape=(n,)):
        return lo + (hi - lo) * torch.rand(shape, generator=gen)

    zenith = torch.stack([u(0.08, 0.3), u(0.25, 0.5), u(0.55, 0.9)], 1)
    horizon = torch.stack([u(0.7, 0.9), u(0.8, 0.93), u(0.88, 1.0)], 1)
    warm = u(0, 1) < 0.25  # sunset / hazy warm horizon
    horizon = torch.where(warm[:, None], torch.stack([u(0.9, 1.0), u(0.65, 0.85), u(0.5, 0.7)], 1),
                          horizon)
    rows = (torch.arange(H, dtype=torch.float32) + 0.5) / H
    cols = (torch.arange(W, dtype=torch.float32) + 0.5) / W
    tilt = u(-0.15, 0.15)
    horizon_at = u(0.9, 1.4)  # where the palest colour is reached (below the frame if > 1)
    t = (rows[None, :, None] + tilt[:, None, None] * (cols[None, None, :] - 0.5))
    t = (t / horizon_at[:, None, None]).clamp(0, 1) ** u(0.7, 1.6)[:, None, None]
    sky = zenith[:, :, None, None] * (1 - t[:, None]) + horizon[:, :, None, None] * t[:, None]

    # sun glow
    sx, sy = u(-0.1, 1.1), u(-0.1, 0.7)
    d2 = ((cols[None, None, :] - sx[:, None, None]) ** 2
          + (rows[None, :, None] - sy[:, None, None]) ** 2)
    radius = u(0.15, 0.45)
    glow = torch.exp(-d2 / radius[:, None, None] ** 2) * u(0.2, 0.7)[:, None, None]
    has_core = (u(0, 1) < 0.5).float()[:, None, None]
    core = torch.exp(-d2 / (0.12 * radius[:, None, None]) ** 2) * has_core
    sun = torch.tensor([1.0, 0.93, 0.75])[None, :, None, None]
    sky = sky + (glow + core)[:, None] * (sun - sky) * 0.9

    # clouds: soft thresholded fractal noise, white where dense, greyer and thinner at the edges
    octaves = 4 if H <= 64 else 5
    noise = _fractal_noise(n, H, W, gen, base=int(u(2, 4, ()).item()), octaves=octaves,
                           stretch=float(u(1.5, 3, ())))[:, 0]
    cover = u(0.0, 0.8)
    lo = 0.64 - 0.28 * cover
    soft = u(0.06, 0.16)
    dens = ((noise - lo[:, None, None]) / soft[:, None, None]).clamp(0, 1)
    dens = dens * dens * (3 - 2 * dens) * u(0.75, 1.0)[:, None, None]
    body = ((noise - lo[:, None, None]) / (2.5 * soft[:, None, None])).clamp(0, 1)
    base_grey, top_grey = u(0.68, 0.8)[:, None, None], u(0.95, 1.0)[:, None, None]
    grey = base_grey + (top_grey - base_grey) * body
    cloud = torch.stack([grey, grey, grey * 1.01], 1)
    cloud = cloud + 0.35 * glow[:, None] * (sun - cloud)  # sunlit near the sun
    sky = sky * (1 - dens[:, None]) + cloud * dens[:, None]
    return (sky.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def read_skies(sky_dir: str | Path, size: int) -> np.ndarray:
    """Sky photographs from a folder (PNG/JPEG), centre-cropped square and resized: (S, 3, H, W)."""
    from PIL import Image

    folder = Path(sky_dir)
    if not folder.is_dir():
        raise DataError(f"sky folder {folder} does not exist; give a folder of PNG/JPEG sky photos")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise DataError(f"no .png/.jpg/.jpeg sky images in {folder}")
    out = []
    for p in files:
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                w, h = im.size
                s = min(w, h)
                im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                im = im.resize((size, size), Image.Resampling.LANCZOS)
                out.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read sky image {p}: {exc}") from None
    return np.stack(out)


_SIDE_SKY_ROWS = 0.47          # fraction of a side face above its horizon haze


def read_sky_crops(files: list[Path], per_face: int, size: int, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Random square crops of sky photographs (SGI .rgb, PNG or JPEG, read by Pillow), resized to
    ``size``: ``per_face`` crops of each file, (len(files)·per_face, 3, size, size) uint8, and the
    file index of each crop. Files named ``skybox_[nesw]*`` are cropped above their horizon
    only (their lower half is ground); crops have sides of 22–44 % of the face (the 'u' face and
    other photos: 22–62 %) and are mirrored left-right at random."""
    from PIL import Image

    rng = np.random.default_rng(10_007 + int(seed))
    out, groups = [], []
    for g, path in enumerate(files):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                im.load()
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read sky image {path}: {exc}") from None
        w, h = im.size
        side_face = Path(path).stem.lower() in {f"skybox_{f}" for f in "nesw"}
        top_limit = int(h * _SIDE_SKY_ROWS) if side_face else h
        hi = 0.44 if side_face else 0.62
        for _ in range(per_face):
            c = int(min(w, h) * rng.uniform(0.22, hi))
            c = max(8, min(c, w, top_limit))
            x0 = int(rng.integers(0, w - c + 1))
            y0 = int(rng.integers(0, top_limit - c + 1))
            crop = im.crop((x0, y0, x0 + c, y0 + c)).resize((size, size),
                                                             Image.Resampling.LANCZOS)
            arr = np.asarray(crop, dtype=np.uint8).transpose(2, 0, 1)
            if rng.random() < 0.5:
                arr = arr[:, :, ::-1]
            out.append(np.ascontiguousarray(arr))
            groups.append(g)
    if not out:
        raise DataError("no sky images to crop")
    return np.stack(out), np.asarray(groups, np.int64)
