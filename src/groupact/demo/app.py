"""What the demo page shows, computed: a trained run, its example images, the controls for its
group, and one answer per request (the input, T_g x, D(Φ_g E x), the latent and the swap).

Kept apart from the HTTP server (:mod:`groupact.demo.server`) so it is tested without a browser,
and so the page computes exactly what ``groupact transform`` does: both call
``model.transform(x, g)`` on the element ``transform.parse_element`` reads from the same text.
"""

from __future__ import annotations

import base64
import io
import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from groupact.data import TransformPairs, build_pair_source, load_data
from groupact.errors import DataError, GroupactError
from groupact.evaluate.figures import to_display
from groupact.evaluate.views3d import looks_binary, whole_volume_views
from groupact.extras import need, require
from groupact.groups import SO2, SO3, Contrast, CyclicShifts, Group
from groupact.runs import LoadedRun, load_run
from groupact.transform import encode_png, parse_element, read_batch

#: example images the page offers (the first ones of the run's test split)
N_EXAMPLES = 16
#: a tile is scaled up (nearest neighbour) to at least this many pixels a side (an image; a
#: volume's slices are three tiles side by side, so a little less)
MIN_SIDE = 168
MIN_SIDE_VOLUME = 112
#: an upload is refused above this many bytes (a drawn digit is a few kB)
MAX_UPLOAD = 8 << 20
#: ... and above this many pixels, read from its header before it is decoded (a small PNG can
#: claim gigapixels: a decompression bomb)
MAX_UPLOAD_PIXELS = 4096 * 4096
#: what a render request may hold, and the type of each (None: absent)
REQUEST_KEYS = {"example": int, "swap": int, "element": int, "g": str, "upload": str,
                "swap_upload": str}
#: the longest ``g`` text a request may send
MAX_G_TEXT = 200

#: what needs matplotlib (the 'demo' extra), for the one-line error when it is missing
DEMO_NEED = "groupact demo"

VARIANT_RGB = (0.84, 0.15, 0.16)    # matplotlib's tab:red, as the figures colour z_v
INVARIANT_RGB = (0.12, 0.47, 0.71)  # tab:blue, z_i


def controls_for(group: Group) -> dict[str, Any]:
    """The page's controls for ``group``: sliders whose values fill ``format`` (the text
    ``groupact transform --g`` takes), a slider over the elements of a finite group, or a text
    box for a group the page does not know (any registered group works through its text)."""
    if isinstance(group, SO2):
        return {"kind": "sliders", "format": "{angle}", "play": "angle", "sliders": [
            {"name": "angle", "label": "angle θ (degrees, counter-clockwise)", "min": 0,
             "max": 360, "step": 1, "value": 0}]}
    if isinstance(group, SO3):
        axis = [{"name": n, "label": f"axis {n[-1]}", "min": -1, "max": 1, "step": 0.05,
                 "value": v} for n, v in (("ad", 1), ("ah", 0), ("aw", 0))]
        return {"kind": "sliders", "format": "{ad},{ah},{aw},{angle}", "play": "angle",
                "sliders": axis + [{"name": "angle", "label": "angle (degrees, right-hand rule "
                                    "about the axis in (d, h, w))", "min": 0, "max": 360,
                                    "step": 1, "value": 0}]}
    if isinstance(group, Contrast):
        return {"kind": "sliders", "format": "{a},{b}", "play": "a", "sliders": [
            {"name": "a", "label": "gain a", "min": round(1 / group.a_max, 3),
             "max": group.a_max, "step": 0.01, "value": 1},
            {"name": "b", "label": "offset b", "min": -group.b_max, "max": group.b_max,
             "step": 0.01, "value": 0}]}
    if isinstance(group, CyclicShifts):
        m = group.size // group.unit
        lo, hi = -(m // 2), (m - 1) // 2
        return {"kind": "sliders", "format": "{dy},{dx}", "play": "dx", "sliders": [
            {"name": n, "label": f"{n} (steps of {group.unit} px)", "min": lo, "max": hi,
             "step": 1, "value": 0} for n in ("dy", "dx")]}
    elements = group.elements()
    if elements is not None:
        return {"kind": "elements", "play": "element", "labels": group.describe(elements)}
    return {"kind": "text", "placeholder": f"an element of '{group.name}', as groupact "
                                           "transform --g takes it"}


def png_data_url(images: np.ndarray) -> str:
    """A (h, w) or (h, w, 3) array in [0, 1] as a ``data:image/png;base64,…`` URL."""
    return "data:image/png;base64," + base64.b64encode(encode_png(images)).decode("ascii")


def upscale(tile: np.ndarray, factor: int) -> np.ndarray:
    return tile.repeat(factor, axis=0).repeat(factor, axis=1)


def latent_panel(z: Tensor, mask: Tensor, side: int = 28) -> np.ndarray:
    """One latent (C, *fibre) as an RGB picture: a tile per channel, bordered red (z_v, moved)
    or blue (z_i, kept). Spatial fibres show |z| over positions (the middle slice of a volume),
    vector fibres the fibre's norm as a filled bar (tiles scaled to the largest norm)."""
    colormaps = need("matplotlib", "demo", DEMO_NEED).colormaps
    z = z.detach().float().cpu()
    c = z.shape[0]
    if z.dim() >= 3:                               # spatial: (C, H, W) or (C, D, H, W)
        maps = z.abs()
        while maps.dim() > 3:                      # a volume: its middle slice
            maps = maps[:, maps.shape[1] // 2]
        maps = maps / maps.amax().clamp_min(1e-12)
        k = max(1, side // max(maps.shape[1:]))
        tiles = [colormaps["viridis"](upscale(m.numpy(), k))[..., :3] for m in maps]
    else:                                          # vectors: (C, k) or (C,)
        norms = z.reshape(c, -1).norm(dim=1)
        norms = (norms / norms.max().clamp_min(1e-12)).numpy()
        tiles = []
        for v in norms:
            t = np.ones((side, side, 3), np.float32)
            fill = int(round(v * side))
            t[side - fill:, :] = (0.3, 0.3, 0.3)
            tiles.append(t)
    h, w = tiles[0].shape[:2]
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    b = 2
    out = np.ones((rows * (h + 2 * b + 2), cols * (w + 2 * b + 2), 3), np.float32)
    for i, t in enumerate(tiles):
        r, q = divmod(i, cols)
        y, x = r * (h + 2 * b + 2) + 1, q * (w + 2 * b + 2) + 1
        out[y:y + h + 2 * b, x:x + w + 2 * b] = VARIANT_RGB if mask[i] > 0.5 else INVARIANT_RGB
        out[y + b:y + b + h, x + b:x + b + w] = t
    return out


def read_upload(data_url: str, input_shape: tuple[int, ...]) -> Tensor:
    """A PNG/JPEG data URL (an upload, or the page's drawing canvas) as a (1, *input_shape)
    image: converted to the model's channels and resized to its size."""
    from PIL import Image, UnidentifiedImageError

    if len(input_shape) != 3:
        raise DataError("this model takes volumes; pick one of the examples (an image upload "
                        "cannot be a volume)")
    head, _, body = data_url.partition(",")
    if not head.startswith("data:image/") or ";base64" not in head:
        raise DataError("an upload must be an image (PNG or JPEG) sent as a data URL")
    if len(body) > MAX_UPLOAD * 4 // 3:
        raise DataError(f"the upload is over {MAX_UPLOAD >> 20} MB; use a smaller image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(base64.b64decode(body, validate=True)))
            if im.width * im.height > MAX_UPLOAD_PIXELS:
                raise DataError(f"the upload is {im.width}×{im.height} pixels, over "
                                f"{MAX_UPLOAD_PIXELS:,}; use a smaller image")
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError("the upload is too large to decode safely; use a smaller image") from None
    except (ValueError, UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"cannot read the upload as an image: {exc.__class__.__name__}") from None
    c, h, w = input_shape
    im = im.convert("L" if c == 1 else "RGB").resize((w, h), Image.Resampling.LANCZOS)
    arr = np.asarray(im, dtype=np.float32) / 255.0
    x = torch.from_numpy(arr)
    x = x[None] if c == 1 else x.permute(2, 0, 1)
    return x[None].contiguous()


class DemoApp:
    """One trained run behind the page."""

    def __init__(self, run: LoadedRun, examples: Tensor, name: str = "", note: str = "",
                 targets: Callable[[int, Tensor], Tensor] | None = None, occluded: bool = False):
        """``targets(k, g)``: what the data pairs example k with under g (for blocked MNIST, the
        digit turned and the block kept), when the examples come from the run's data;
        ``occluded``: the run's data paints a block the group leaves alone, so T_g of any other
        image (an upload) is unknown."""
        self.run, self.model, self.group = run, run.model.eval(), run.model.group
        self.examples = examples
        self.targets, self.occluded = targets, occluded
        self.name = name or run.cfg.name
        self.controls = controls_for(self.group)
        #: why there are no examples, when there are none
        self.note = note
        self.volume = len(run.input_shape) == 4
        self.binary = bool(len(examples)) and self.volume and looks_binary(examples)
        x0 = torch.zeros(1, *run.input_shape)
        try:                     # can the group act on the inputs themselves (T_g x)?
            self.group.act_image(x0, self.group.identity(1))
            self.has_truth = True
        except (GroupactError, RuntimeError, ValueError):
            self.has_truth = False   # rendered data: T_g x is another render, not a warp of x

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, examples: str | Path | None = None,
                     log=print, trust_code: bool = False) -> "DemoApp":
        """The run, with examples from a file (``--examples``: an image or an (N, …) .npy) or
        from the run's own test split (loaded as training loads it, cached after the first;
        shown as the model sees them: with blocked MNIST's block, a plane on its sky);
        ``trust_code`` as in :func:`~groupact.runs.load_run`."""
        require("matplotlib", "demo", DEMO_NEED)   # before minutes of loading, not after
        run = load_run(run_dir, trust_code=trust_code)
        note, targets, occluded = "", None, bool(run.cfg.data.block_prob > 0)
        if examples is not None:
            x = read_batch(examples, run.input_shape)
        else:
            log(f"loading the test images of {run_dir} (data.kind={run.cfg.data.kind}) …")
            try:
                splits = load_data(run.cfg.data)
                # the views the model sees: blocked MNIST with its block, a plane on its sky
                source = build_pair_source(run.cfg, run.model.group, splits)
                idx = torch.arange(min(N_EXAMPLES, len(splits.test)))
                x = source.views(splits.test, idx, None)
                if isinstance(source, TransformPairs):   # T_g of one example, its block kept
                    clean = splits.test.images[idx]
                    blocks = source.canonical_blocks(len(idx), *clean.shape[-2:])

                    def moved(k: int, g: Tensor) -> Tensor:
                        return source.moved_views(clean[k:k + 1], g, None if blocks is None
                                                  else blocks[k:k + 1])
                    targets = moved
            except DataError as exc:
                if len(run.input_shape) == 4:
                    raise DataError(f"{exc}; or give --examples FILE.npy of volumes") from None
                x, note = torch.zeros(0, *run.input_shape), f"no examples: {exc}"
                log(f"groupact: warning: {note}; draw or upload images on the page")
        return cls(run, x[:N_EXAMPLES].float(), name=Path(run_dir).name, note=note,
                   targets=targets, occluded=occluded)

    # --- what the page asks --------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        mask = self.model.mask.hard()
        return {
            "run": self.name, "recipe": self.run.cfg.name, "group": self.group.name,
            "input_shape": list(self.run.input_shape), "volume": self.volume,
            "controls": self.controls, "has_truth": self.has_truth,
            "examples": [self._picture(self.examples[i:i + 1])["slices"]
                         for i in range(len(self.examples))],
            "note": self.note, "channels": int(mask.numel()), "variant": int(mask.sum()),
            "can_upload": not self.volume,
        }

    def element(self, request: dict[str, Any]) -> Tensor:
        """The request's g: an index into a finite group's elements, or text as --g takes it
        (with sliders, within the ranges they offer)."""
        if request.get("element") is not None:
            elements = self.group.elements()
            k = request["element"]
            if elements is None or not 0 <= k < len(elements):
                raise GroupactError(f"element {k} is not an index of group '{self.group.name}'")
            return elements[k:k + 1]
        text = request.get("g") or ""
        if len(text) > MAX_G_TEXT:
            raise GroupactError(f"g is {len(text)} characters long; the page sends a few numbers")
        g = parse_element(self.group, text)
        self._check_slider_ranges(text)
        return g

    def _check_slider_ranges(self, text: str) -> None:
        """Refuse values the page's sliders cannot send (an angle of 1e300°, an axis of 1e200):
        one number per slider, in the format's order, each within its slider's range."""
        c = self.controls
        if c["kind"] != "sliders":
            return
        names = re.findall(r"\{(\w+)\}", c["format"])
        parts = text.split(",")
        if len(parts) != len(names):
            raise GroupactError(f"g takes {len(names)} numbers ({', '.join(names)}), as the "
                                f"page's sliders send them; got {text[:40]!r}")
        ranges = {s["name"]: (s["min"], s["max"]) for s in c["sliders"]}
        for name, part in zip(names, parts):
            try:
                value = float(part)
            except ValueError:
                raise GroupactError(f"g's {name} must be a plain number; got {part[:20]!r}") \
                    from None
            lo, hi = ranges[name]
            if not (math.isfinite(value) and lo - 1e-9 <= value <= hi + 1e-9):
                raise GroupactError(f"g's {name} is {value:g}; the page's slider goes from "
                                    f"{lo:g} to {hi:g}")

    @staticmethod
    def checked_request(request: dict[str, Any]) -> dict[str, Any]:
        """A render request with only the keys the page sends, each of its type (indices whole
        numbers, not 1.5 or true), so nothing odd reaches the model."""
        unknown = sorted(set(request) - set(REQUEST_KEYS))
        if unknown:
            raise GroupactError(f"unknown request key '{str(unknown[0])[:40]}'; a request holds "
                                f"{', '.join(REQUEST_KEYS)}")
        for key, kind in REQUEST_KEYS.items():
            value = request.get(key)
            if value is None:
                continue
            if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
                raise GroupactError(f"'{key}' must be a whole number; got {str(value)[:40]!r}")
            if kind is str and not isinstance(value, str):
                raise GroupactError(f"'{key}' must be text; got {type(value).__name__}")
        return request

    def image(self, request: dict[str, Any], key: str = "example", upload: str = "upload"
              ) -> Tensor:
        if request.get(upload):
            return read_upload(request[upload], self.run.input_shape)
        k = request.get(key) or 0
        if not 0 <= k < len(self.examples):
            raise GroupactError(f"there is no example {k}; there are {len(self.examples)}")
        return self.examples[k:k + 1]

    @torch.no_grad()
    def render(self, request: dict[str, Any]) -> dict[str, Any]:
        """Everything the page shows for one image and one g."""
        request = self.checked_request(request)
        x = self.image(request)
        g = self.element(request)
        z = self.model.encode(x)            # one encoder pass: D(Φ_g z) is model.transform(x, g)
        moved = self.model.act(z, g)
        out = self.model.decode(moved)
        answer: dict[str, Any] = {"g": self.group.describe(g)[0], "input": self._picture(x),
                                  "output": self._picture(out), "truth": None, "psnr": None}
        truth = None
        if self.has_truth and not request.get("upload") and self.targets is not None:
            truth = self.targets(request.get("example") or 0, g)
        elif self.has_truth and not self.occluded:
            truth = self.group.act_image(x, g)
        elif self.has_truth:
            answer["truth_note"] = ("unknown for this image: the run's data paints a block that "
                                    "g leaves in place, and an upload does not say where it is")
        if truth is not None:
            truth = truth.clamp(0, 1)
            answer["truth"] = self._picture(truth)
            mse = float((out - truth).pow(2).mean())
            answer["psnr"] = round(10 * math.log10(1 / max(mse, 1e-10)), 2)
        mask = self.model.mask.hard()
        answer["latent"] = png_data_url(latent_panel(z[0], mask))
        answer["moved_latent"] = png_data_url(latent_panel(moved[0], mask))
        if request.get("swap") is not None or request.get("swap_upload"):
            other = self.image(request, "swap", "swap_upload")
            zo = self.model.encode(other)
            mixed = self.model.mix(self.model.mask_like(z), z, zo)   # z_v of x, z_i of other
            answer["swap"] = {"other": self._picture(other),
                              "result": self._picture(self.model.decode(mixed))}
        return answer

    # --- pictures ------------------------------------------------------------------------
    def _picture(self, x: Tensor) -> dict[str, Any]:
        """One image (or volume: its three central slices, and a whole-volume view) as PNG data
        URLs scaled up by whole factors; ``scale`` says by how much (the test reads it back)."""
        tile = to_display(x.clamp(0, 1))[0]
        k = max(1, math.ceil((MIN_SIDE_VOLUME if self.volume else MIN_SIDE) / min(tile.shape[:2])))
        pic: dict[str, Any] = {"slices": png_data_url(upscale(tile, k)), "scale": k}
        if self.volume:
            view = to_display(whole_volume_views(x.clamp(0, 1), self.binary))[0]
            kv = max(1, math.ceil(MIN_SIDE_VOLUME / min(view.shape[:2])))
            pic["view3d"] = png_data_url(upscale(view, kv))
        return pic
