"""Use a trained model on a user's images: transform them through the latent space
(`groupact transform`) or read features off it for a downstream classifier (`groupact features`).
"""

from __future__ import annotations

import math
import typing
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from groupact.config import Readout
from groupact.data.base import to_unit_float
from groupact.data.images import read_image
from groupact.errors import ConfigError, DataError, GroupactError
from groupact.evaluate.figures import to_display
from groupact.evaluate.probe import split_features
from groupact.io import atomic_write_bytes
from groupact.runs import load_run


def _read_npy(path: Path) -> Tensor:
    """A .npy array (no pickles) as floats in [0, 1], or a DataError naming the problem."""
    if not path.is_file():
        raise DataError(f"input {path} does not exist")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read {path} as .npy: {str(e)[:120]}") from None
    return to_unit_float(arr, str(path))


def _channels_first(x: Tensor, input_shape: tuple[int, ...]) -> Tensor:
    """An image array with its channels last — (H, W, C) or (N, H, W, C), as the npz loader and
    most image libraries give them — moved to channels first, when that is what fits the model."""
    c, spatial = input_shape[0], tuple(input_shape[1:])
    if x.dim() >= len(input_shape) and x.shape[-1] == c and tuple(x.shape[-1 - len(spatial):-1]) \
            == spatial and tuple(x.shape[-len(input_shape):]) != tuple(input_shape):
        return x.movedim(-1, -len(input_shape)).contiguous()
    return x


def read_input(path: str | Path, input_shape: tuple[int, ...]) -> Tensor:
    """An image (PNG/JPEG) or array (.npy, channels first or last) as a (1, *input_shape) batch,
    or a DataError."""
    path = Path(path)
    if path.suffix == ".npy":
        x = _channels_first(_read_npy(path), input_shape)
        while x.dim() < len(input_shape) + 1:
            x = x.unsqueeze(0)
    else:
        x = read_image(path, input_shape[0])
    if tuple(x.shape[1:]) != tuple(input_shape):
        want = "×".join(map(str, input_shape[1:]))
        got = "×".join(map(str, x.shape[2:]))
        raise DataError(f"{path} is {got} with {x.shape[1]} channel(s) but this model takes "
                        f"{want} with {input_shape[0]}; resize the image to {want} first")
    if x.shape[0] != 1:      # an (N, …) array: N = 0 would write an empty file, N > 1 several
        raise DataError(f"{path} holds {x.shape[0]} images; give one (`groupact features` "
                        "takes many)")
    if not torch.isfinite(x).all():
        raise DataError(f"{path} contains NaN or infinite values")
    return x


def encode_png(images: np.ndarray) -> bytes:
    """A (h, w) or (h, w, 3) array in [0, 1] as PNG bytes."""
    import io

    from PIL import Image

    arr = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


#: the most elements `--orbit` draws (a strip of 361 tiles is already 10,000 pixels wide)
MAX_ORBIT = 360

#: what `transform --output` can write
TRANSFORM_SUFFIXES = (".png", ".npy")


def check_output(output: Path, inputs: list[Path], suffixes: tuple[str, ...]) -> None:
    """Refuse an output path before any work: a suffix the writer does not honour, a folder,
    or one of the command's own inputs (which it would overwrite)."""
    if output.suffix.lower() not in suffixes:
        raise GroupactError(f"--output {output}: this command writes {' or '.join(suffixes)} "
                            f"files; give a name ending in {suffixes[0]}")
    if output.is_dir():
        raise GroupactError(f"--output {output} is a folder; give a file name")
    for p in inputs:
        if output.resolve() == p.resolve():
            raise GroupactError(f"--output {output} is the input; give another file name")


def parse_element(group, text: str) -> Tensor:
    """``--g`` as a group element; NaN and inf are refused (they turn images black)."""
    for part in str(text).split(","):
        part = part.strip().split("=")[-1].removesuffix("deg").removesuffix("°")
        try:
            value = float(part)
        except ValueError:
            continue
        if not math.isfinite(value):
            raise GroupactError(f"--g takes finite numbers; got {text!r}")
    try:
        g = group.parse(text)
    except (OverflowError, ValueError):
        raise GroupactError(f"--g {text[:40]!r} is not an element of group '{group.name}'; "
                            "see `groupact transform --help`") from None
    if g.is_floating_point() and not bool(torch.isfinite(g).all()):
        raise GroupactError(f"--g takes finite numbers; got {text!r}")
    return g


#: a PNG tile is scaled up (nearest neighbour) to at least this many pixels a side by default
MIN_TILE = 112


def labelled_strip(tiles: np.ndarray, labels: list[str] | None, scale: int) -> np.ndarray:
    """Tiles (n, h, w[, 3]) in [0, 1] side by side, each scaled ``scale``× by pixel repetition,
    with a label under each when ``labels`` is given: (H, W[, 3]) in [0, 1]."""
    from PIL import Image, ImageDraw

    big = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    strip = np.concatenate(list(big), axis=1)
    if not labels:
        return strip
    rgb = strip if strip.ndim == 3 else strip[..., None].repeat(3, axis=2)
    band = 14
    canvas = Image.new("RGB", (rgb.shape[1], rgb.shape[0] + band), "white")
    canvas.paste(Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    tile_w = big.shape[2]
    for i, text in enumerate(labels):
        draw.text((i * tile_w + 2, rgb.shape[0] + 1), text[: max(4, tile_w // 6)], fill="black")
    return np.asarray(canvas).astype(np.float32) / 255.0


def check_scale(scale: int | None) -> None:
    """``--scale``: a PNG's enlargement factor, 1 to 32."""
    if scale is not None and not 1 <= scale <= 32:
        raise GroupactError(f"--scale takes a factor from 1 to 32; got {scale}")


def write_images(output: Path, images: Tensor, scale: int | None = None,
                 labels: list[str] | None = None) -> None:
    """A (N, C, …) batch to ``output``: ``.npy`` as it is (one image without its batch axis), a
    PNG strip scaled up ``scale``× (default: to at least :data:`MIN_TILE` pixels a side) with a
    label under each tile when given, volumes as their central slices."""
    if output.suffix.lower() == ".npy":
        import io
        buf = io.BytesIO()
        np.save(buf, (images.squeeze(0) if images.shape[0] == 1 else images).numpy())
        atomic_write_bytes(output, buf.getvalue())
    else:
        tiles = to_display(images)
        factor = scale or max(1, math.ceil(MIN_TILE / min(tiles.shape[1:3])))
        atomic_write_bytes(output, encode_png(labelled_strip(tiles, labels, factor)))


def transform_file(run_dir: str | Path, input_path: str | Path, output: str | Path,
                   g: str | None = None, orbit: int | None = None,
                   scale: int | None = None, trust_code: bool = False) -> Tensor:
    """Write D(Φ_g(E x)) (or an orbit strip: input, then N elements) to ``output``.

    ``.npy`` holds the model's output as it is; a PNG is scaled up ``scale``× (default: to at
    least :data:`MIN_TILE` pixels a side) and an orbit strip is labelled with each element.
    ``trust_code``: as in :func:`groupact.runs.load_run`.
    """
    output = Path(output)
    check_output(output, [Path(input_path)], TRANSFORM_SUFFIXES)
    if orbit is not None and not 1 <= orbit <= MAX_ORBIT:
        raise GroupactError(f"--orbit takes N from 1 to {MAX_ORBIT}; got {orbit}")
    check_scale(scale)
    run = load_run(run_dir, trust_code=trust_code)
    model, group = run.model, run.model.group
    x = read_input(input_path, run.input_shape)
    labels = None
    if orbit is not None:
        finite = group.elements()
        if finite is not None and orbit > len(finite):
            raise GroupactError(f"--orbit {orbit}: group '{group.name}' has {len(finite)} "
                                f"elements; give --orbit {len(finite)} or fewer")
        try:
            elems = group.orbit_elements(orbit)
        except NotImplementedError:
            elems = group.sample(orbit, torch.Generator().manual_seed(0))
        parts = [model.transform(x.expand(len(e), *x.shape[1:]), e)  # bounded memory
                 for e in torch.split(elems, 64)]
        out = torch.cat([x, *parts])
        labels = ["input"] + group.describe(elems)
    else:
        out = model.transform(x, parse_element(group, g))
    write_images(output, out, scale, labels)
    return out


def align_files(run_dir: str | Path, input_path: str | Path, target_path: str | Path,
                output: str | Path | None = None, scale: int | None = None,
                trust_code: bool = False, polish: bool = False):
    """Estimate ĝ with T_ĝ(input) ≈ target through the run's latent (:meth:`~groupact.model.
    GroupActionAutoencoder.estimate_g`, ``polish`` as there); with ``output``, write T_ĝ(input),
    the group's own action on the input's pixels. Every input is checked before anything is written;
    ``trust_code`` as in :func:`~groupact.runs.load_run`. Returns the estimate and the run's
    group (whose ``to_text`` prints ĝ as ``--g`` takes it)."""
    if output is not None:
        check_output(Path(output), [Path(input_path), Path(target_path)], TRANSFORM_SUFFIXES)
    check_scale(scale)
    for what, path in (("--input", Path(input_path)), ("--target", Path(target_path))):
        if not path.is_file():
            raise DataError(f"{what} {path} " + ("is a folder; give an image file"
                                                 if path.is_dir() else "does not exist"))
    run = load_run(run_dir, trust_code=trust_code)
    x1 = read_input(input_path, run.input_shape)
    x2 = read_input(target_path, run.input_shape)
    estimate = run.model.estimate_g(x1, x2, polish=polish)
    if output is not None:
        write_images(Path(output), run.model.group.act_image(x1, estimate.g), scale)
    return estimate, run.model.group


#: what `features` can read off a latent z = E(x) (docs/PROTOCOL.md, the probes)
READOUTS = typing.get_args(Readout)


def read_batch(path: str | Path, input_shape: tuple[int, ...]) -> Tensor:
    """Images as an (N, *input_shape) batch: one image file, or a .npy of N images
    ((N, C, H, W), or (N, H, W) for one channel); a DataError otherwise."""
    path = Path(path)
    if path.suffix != ".npy":
        return read_input(path, input_shape)
    x = _channels_first(_read_npy(path), input_shape)
    if x.dim() == len(input_shape) and input_shape[0] == 1:
        x = x.unsqueeze(1)                       # (N, H, W) → (N, 1, H, W)
    if x.dim() != len(input_shape) + 1 or tuple(x.shape[1:]) != tuple(input_shape):
        shape = ", ".join(map(str, input_shape))
        raise DataError(f"{path} holds an array of shape {tuple(x.shape)}; this model takes "
                        f"N images as an (N, {shape}) array (channels first or last)")
    if not torch.isfinite(x).all():
        raise DataError(f"{path} contains NaN or infinite values")
    return x


@torch.no_grad()
def latent_features(model, x: Tensor, readout: str, batch: int = 256) -> Tensor:
    """(N, F) features of images x: the invariant read-out (z_i plus the action's invariants of
    z_v), z, z_i or z_v, flattened; encoded in batches."""
    if readout not in READOUTS:
        raise ConfigError(f"unknown readout '{readout}'; choose one of: {', '.join(READOUTS)}")
    mask = model.mask.hard()
    out = []
    for i in range(0, len(x), batch):
        z = model.encode(x[i:i + batch])
        out.append(model.invariant_features(z) if readout == "invariant"
                   else split_features(z, mask)[readout])
    return torch.cat(out)


def features_file(run_dir: str | Path, input_path: str | Path, output: str | Path,
                   readout: str | None = None, trust_code: bool = False) -> Tensor:
    """Write the (N, F) float32 features of the input images to ``output`` (.npy); ``readout``
    defaults to the run's ``model.readout``; ``trust_code`` as in :func:`~groupact.runs.load_run`."""
    output = Path(output)
    check_output(output, [Path(input_path)], (".npy",))
    run = load_run(run_dir, trust_code=trust_code)
    x = read_batch(input_path, run.input_shape)
    if len(x) == 0:
        raise DataError(f"{input_path} holds no images; give at least one")
    feats = latent_features(run.model, x, readout or run.cfg.model.readout)
    import io
    buf = io.BytesIO()
    np.save(buf, feats.float().numpy())
    atomic_write_bytes(output, buf.getvalue())
    return feats
