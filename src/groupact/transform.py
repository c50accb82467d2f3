"""Transform a user's image through a trained model's latent space (`groupact transform`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from groupact.data.base import to_unit_float
from groupact.data.images import read_image
from groupact.errors import DataError, GroupactError
from groupact.evaluate.figures import to_display
from groupact.io import atomic_write_bytes
from groupact.runs import load_run


def read_input(path: str | Path, input_shape: tuple[int, ...]) -> Tensor:
    """An image (PNG/JPEG) or array (.npy) as a (1, *input_shape) batch, or a DataError."""
    path = Path(path)
    if path.suffix == ".npy":
        if not path.is_file():
            raise DataError(f"input {path} does not exist")
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read {path} as .npy: {e}") from None
        x = to_unit_float(arr, str(path))
        while x.dim() < len(input_shape) + 1:
            x = x.unsqueeze(0)
    else:
        x = read_image(path, input_shape[0])
    if tuple(x.shape[1:]) != tuple(input_shape):
        want = "×".join(map(str, input_shape[1:]))
        got = "×".join(map(str, x.shape[2:]))
        raise DataError(f"{path} is {got} with {x.shape[1]} channel(s) but this model takes "
                        f"{want} with {input_shape[0]}; resize the image to {want} first")
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


def transform_file(run_dir: str | Path, input_path: str | Path, output: str | Path,
                   g: str | None = None, orbit: int | None = None) -> Tensor:
    """Write D(Φ_g(E x)) (or an orbit strip: input, then N elements) to ``output`` (PNG/.npy)."""
    run = load_run(run_dir)
    model, group = run.model, run.model.group
    x = read_input(input_path, run.input_shape)
    if orbit is not None:
        if orbit < 1:
            raise GroupactError("--orbit needs N ≥ 1")
        try:
            elems = group.orbit_elements(orbit)
        except NotImplementedError:
            elems = group.sample(orbit, torch.Generator().manual_seed(0))
        out = model.transform(x.expand(elems.shape[0], *x.shape[1:]), elems)
        out = torch.cat([x, out])
    else:
        out = model.transform(x, group.parse(g))
    output = Path(output)
    if output.suffix == ".npy":
        import io
        buf = io.BytesIO()
        np.save(buf, out.squeeze(0).numpy() if orbit is None else out.numpy())
        atomic_write_bytes(output, buf.getvalue())
    else:
        tiles = to_display(out)
        atomic_write_bytes(output, encode_png(np.concatenate(list(tiles), axis=1)))
    return out
