"""Network registry: a recipe's ``model.net`` names an encoder/decoder pair for an input shape.

Any user nn.Module pair plugs in through :class:`groupact.model.GroupActionAutoencoder`; the
registry only makes the recipes' networks available by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from torch import nn

from groupact.errors import ConfigError
from groupact.nets.conv import (JinDecoder, JinEncoder, MapToVolume, VectorHead, VectorTail,
                                VolumeToMap, conv_decoder, conv_encoder)
from groupact.nets.rendering import composite_pair, render_pair, sky_volumes
from groupact.nets.residual import residual_pair
from groupact.nets.steerable import steerable_pair
from groupact.registry import Registry


@dataclass
class NetSpec:
    """Options a builder reads from ``model.*`` (unused ones are ignored by that builder)."""

    input_shape: tuple[int, ...]
    channels: int = 64
    widths: tuple[int, ...] = (32,)
    latent_dim: int = 24
    fibre: int = 2
    frequencies: int = 8
    blocks: int = 2          # res2d/res3d: ResBlocks in the encoder and in the decoder
    factor: int = 2          # res2d/res3d: space-to-depth factor (latent side = side / factor)
    ball: bool = False       # res2d/res3d: mask the latent to the inscribed ball (rotations)
    out_margin: float = 0.0  # res2d/res3d: output σ stretched by this and clamped (0: plain σ)
    sky_copy: bool = False   # render-composite: the visible background copied, the cut-out painted
    cut_margin: int = 0      # render-composite: the cut-out grown by this many pixels (max-pool)


Builder = Callable[[NetSpec], tuple[nn.Module, nn.Module]]


class NetEntry(NamedTuple):
    """A registered net: its builder, a one-line description and the pixel range its encoder
    reads and its decoder writes (the model maps that range to and from the data's [0, 1])."""

    build: Builder
    description: str
    pixel_range: tuple[float, float] = (0.0, 1.0)


def _spatial_side(spec: NetSpec, dims: int, name: str) -> None:
    if len(spec.input_shape) != dims + 1:
        kind = "images (C, H, W)" if dims == 2 else "volumes (C, D, H, W)"
        raise ConfigError(f"net '{name}' takes {kind}; the data has shape {spec.input_shape}")
    factor = 2 ** (len(spec.widths) + 1)
    bad = [s for s in spec.input_shape[1:] if s % factor]
    if bad:
        raise ConfigError(f"net '{name}' halves the side {len(spec.widths) + 1} times, so sides "
                          f"must be multiples of {factor}; the data has {spec.input_shape[1:]}")


def _conv2d(spec: NetSpec):
    _spatial_side(spec, 2, "conv2d")
    c = spec.input_shape[0]
    return (conv_encoder(2, c, spec.widths, spec.channels),
            conv_decoder(2, c, spec.widths, spec.channels))


def _conv3d(spec: NetSpec):
    _spatial_side(spec, 3, "conv3d")
    c = spec.input_shape[0]
    return (conv_encoder(3, c, spec.widths, spec.channels),
            conv_decoder(3, c, spec.widths, spec.channels))


def _mnist_side(spec: NetSpec, name: str) -> int:
    if tuple(spec.input_shape[1:]) != (28, 28):
        raise ConfigError(f"net '{name}' takes 28×28 images; the data is "
                          f"{spec.input_shape[1:]} (set data.size=28 to resize)")
    return spec.input_shape[0]


def _authors_mnist(spec: NetSpec):
    """The authors' published MNIST net (rotated_mnist.py, commit b4d0d40), layer for layer:
    conv 1→32 (4×4, s2, p1), LeakyReLU(0.2), conv 32→64, LeakyReLU(0.2); decoder ConvT 64→32,
    LeakyReLU(0.2), ConvT 32→1, Tanh — on pixels normalised to [−1, 1]."""
    c = _mnist_side(spec, "authors-mnist")
    return (conv_encoder(2, c, (32,), 64, activate_latent=True),
            conv_decoder(2, c, (32,), 64, output="tanh"))


def _authors_mnist_sigmoid(spec: NetSpec):
    """groupact's earlier variant of the authors' net: no LeakyReLU on the latent, a sigmoid on
    [0, 1] pixels. Kept for the reproduce plan's net-sigmoid ablation (it converges slower,
    docs/RESULTS.md), its only use."""
    c = _mnist_side(spec, "authors-mnist-sigmoid")
    return conv_encoder(2, c, (32,), 64), conv_decoder(2, c, (32,), 64)


def _jin_mnist(spec: NetSpec):
    _mnist_side(spec, "jin-mnist")
    if spec.latent_dim % spec.fibre:
        raise ConfigError(f"model.latent_dim={spec.latent_dim} is not a multiple of "
                          f"model.fibre={spec.fibre}")
    c = spec.input_shape[0]
    return (JinEncoder(c, spec.latent_dim, spec.fibre), JinDecoder(c, spec.latent_dim))


def _conv_vector(spec: NetSpec, dims: int, name: str):
    """Conv encoder + FC to (latent_dim / fibre) channels of fibre-vectors, and its mirror."""
    _spatial_side(spec, dims, name)
    if spec.latent_dim % spec.fibre:
        raise ConfigError(f"model.latent_dim={spec.latent_dim} is not a multiple of "
                          f"model.fibre={spec.fibre}")
    c, sides = spec.input_shape[0], spec.input_shape[1:]
    f = 2 ** (len(spec.widths) + 1)
    body_shape = (spec.channels, *(s // f for s in sides))
    feats = 1
    for s in body_shape:
        feats *= s
    enc = VectorHead(conv_encoder(dims, c, spec.widths, spec.channels), feats, spec.latent_dim,
                     spec.fibre)
    dec = VectorTail(conv_decoder(dims, c, spec.widths, spec.channels), body_shape,
                     spec.latent_dim)
    return enc, dec


def _conv2d_vector(spec: NetSpec):
    return _conv_vector(spec, 2, "conv2d-vector")


def _conv3d_vector(spec: NetSpec):
    return _conv_vector(spec, 3, "conv3d-vector")


def _conv2d_volume(spec: NetSpec):
    """2D images to a latent of small 3D volumes (C channels of S×S×S), for SO(3) on pictures."""
    _spatial_side(spec, 2, "conv2d-volume")
    c, h, _ = spec.input_shape
    side = h // 2 ** (len(spec.widths) + 1)
    enc = nn.Sequential(conv_encoder(2, c, spec.widths, spec.channels * side),
                        MapToVolume(spec.channels))
    dec = nn.Sequential(VolumeToMap(), conv_decoder(2, c, spec.widths, spec.channels * side))
    return enc, dec


def _render_volume(spec: NetSpec):
    """Dupont et al.'s equivariant neural rendering, CPU-sized (nets/rendering.py): the object
    as ``channels`` feature volumes of (S/4)³, the background as ``channels`` more channels of
    the same shape that skip the volume (full-resolution 2D features packed into fibres);
    ``widths[0]`` is the 2D trunk width."""
    if len(spec.input_shape) != 3 or spec.input_shape[1] != spec.input_shape[2] \
            or spec.input_shape[1] % 16:
        raise ConfigError(f"net 'render-volume' takes square images with a side divisible by "
                          f"16; the data has shape {spec.input_shape}")
    c, s = spec.input_shape[0], spec.input_shape[1]
    full = max(1, (spec.channels // 2) * (s // 4) // 16)
    return render_pair(c, s, width=spec.widths[0], object_channels=spec.channels,
                       sky_channels=spec.channels, sky_full=full)


def _render_composite(spec: NetSpec):
    """An object volume rendered by emission–absorption over a sky in-painted from the picture
    with the object cut out (nets/rendering.py): ``channels`` object volumes of (S/4)³ (a density
    and channels − 1 features), 8 sky channels; ``widths[0]`` is the 2D trunk width."""
    if len(spec.input_shape) != 3 or spec.input_shape[1] != spec.input_shape[2] \
            or spec.input_shape[1] % 16:
        raise ConfigError(f"net 'render-composite' takes square images with a side divisible "
                          f"by 16; the data has shape {spec.input_shape}")
    if spec.channels < 2:
        raise ConfigError("net 'render-composite': model.channels must be at least 2 (a density "
                          f"and a feature); got {spec.channels}")
    c, s = spec.input_shape[0], spec.input_shape[1]
    v = s // 4
    if 64 % v:
        raise ConfigError(f"net 'render-composite' packs 4 full-resolution sky maps into {v}³ "
                          f"fibres, which needs (side/4) to divide 64; the data has side {s}")
    sky_full = 4
    if spec.sky_copy and c + 1 != sky_full:
        raise ConfigError(f"model.sky_copy carries the picture's {c} channels and the cut-out in "
                          f"{sky_full} full-resolution maps, so it needs 3-channel pictures; the "
                          f"data has {c} (set model.sky_copy=false)")
    if not 0 <= spec.cut_margin <= s // 8:
        raise ConfigError(f"net 'render-composite': model.cut_margin must be a whole number of "
                          f"pixels from 0 to {s // 8} (side / 8); got {spec.cut_margin}")
    sky_channels = sky_volumes(sky_full, v) + 64 // v     # + 64 low-resolution sky features
    return composite_pair(c, s, width=spec.widths[0], object_channels=spec.channels,
                          sky_channels=sky_channels, sky_full=sky_full, sky_copy=spec.sky_copy,
                          cut_margin=spec.cut_margin)


def _steerable_polar(spec: NetSpec):
    if len(spec.input_shape) != 3 or spec.input_shape[1] != spec.input_shape[2]:
        raise ConfigError(f"net 'steerable-polar' takes square images (C, S, S); the data has "
                          f"shape {spec.input_shape}")
    try:
        return steerable_pair(spec.input_shape[0], spec.input_shape[1], spec.channels,
                              spec.widths, spec.frequencies)
    except ValueError as e:
        raise ConfigError(f"net 'steerable-polar': {e} (lower model.frequencies)") from None


def _residual(spec: NetSpec, dims: int, name: str):
    """res2d/res3d: space-to-depth, GroupNorm ResBlocks, (ball-masked) latent, depth-to-space."""
    if len(spec.input_shape) != dims + 1:
        kind = "images (C, H, W)" if dims == 2 else "volumes (C, D, H, W)"
        raise ConfigError(f"net '{name}' takes {kind}; the data has shape {spec.input_shape}")
    c, *sides = spec.input_shape
    if len(set(sides)) != 1:
        raise ConfigError(f"net '{name}' takes square/cubic inputs; the data has sides {sides}")
    if spec.factor < 1 or sides[0] % spec.factor:
        raise ConfigError(f"net '{name}': model.factor={spec.factor} must divide the side "
                          f"{sides[0]}")
    if spec.blocks < 0:
        raise ConfigError(f"net '{name}': model.blocks must be 0 or more; got {spec.blocks}")
    width = spec.widths[0] if spec.widths else 32
    if not 0.0 <= spec.out_margin < 0.5:
        raise ConfigError(f"net '{name}': model.out_margin must lie in [0, 0.5); got "
                          f"{spec.out_margin}")
    return residual_pair(dims, c, sides[0], width, spec.channels, spec.blocks, spec.factor,
                         spec.ball, spec.out_margin)


def _res2d(spec: NetSpec):
    return _residual(spec, 2, "res2d")


def _res3d(spec: NetSpec):
    return _residual(spec, 3, "res3d")


#: model.net → builder NetSpec → (encoder, decoder); each records its pixel range
NETS: Registry[tuple] = Registry("model.net", "model",
                                 unknown_hint=", or MODULE:FACTORY for your own")
NETS.register("authors-mnist", _authors_mnist, "the paper's MNIST net as published: conv 1→32→64 "
              "(4×4, stride 2, LeakyReLU after each), 64×7×7 latent, mirrored decoder ending in "
              "Tanh on [−1, 1] pixels", pixel_range=(-1.0, 1.0))
NETS.register("authors-mnist-sigmoid", _authors_mnist_sigmoid, "groupact's earlier variant of "
              "authors-mnist: no latent LeakyReLU, sigmoid on [0, 1]")
NETS.register("jin-mnist", _jin_mnist, "Jin et al.'s MNIST net: 4 stride-2 convs, FC 256, FC "
              "latent_dim as (latent_dim/fibre)×fibre vectors")
NETS.register("conv2d", _conv2d, "stride-2 conv encoder/decoder for images; latent "
              "C×(H/2^L)×(W/2^L)")
NETS.register("conv3d", _conv3d, "stride-2 Conv3d encoder/decoder for volumes; latent C×small "
              "volume")
NETS.register("res2d", _res2d, "residual net for images: space-to-depth by model.factor, "
              "model.blocks GroupNorm ResBlocks of width model.widths[0] before and after the "
              "latent action, C×(H/f)×(W/f) latent (model.ball: masked to the inscribed disc), "
              "depth-to-space out; no transposed convs")
NETS.register("res3d", _res3d, "residual net for volumes: space-to-depth by model.factor, "
              "model.blocks GroupNorm ResBlocks of width model.widths[0] before and after the "
              "latent action, C×(S/f)³ latent (model.ball: masked to the inscribed ball), "
              "depth-to-space out; no transposed convs")
NETS.register("conv2d-vector", _conv2d_vector, "conv encoder + FC to a vector latent of k-vector "
              "fibres")
NETS.register("conv3d-vector", _conv3d_vector, "Conv3d encoder + FC to a vector latent of k-vector "
              "fibres")
NETS.register("conv2d-volume", _conv2d_volume, "conv encoder whose latent is C small 3D volumes "
              "(SO(3) on pictures of 3D objects)")
NETS.register("render-volume", _render_volume, "neural rendering for objects on a background "
              "(Dupont et al. 2020): 2D ResNet → inverse projection → C feature volumes (S/4)³, "
              "plus C background channels that skip the volume; decoder composites object over "
              "background")
NETS.register("render-composite", _render_composite, "objects on a background: the object as "
              "feature volumes (S/4)³ rendered by emission–absorption along the view, the "
              "background in-painted from the picture with the predicted object cut out, "
              "composited")
NETS.register("steerable-polar", _steerable_polar, "SO(2)-steerable: polar sampling, wrap-around "
              "convs, C channels × rings × 2K+1 angular Fourier coefficients "
              "(action.kind=steerable)")


def net_entry(name: str) -> NetEntry:
    """The registry entry of ``model.net``, with a did-you-mean error for an unknown name.

    ``model.net: MODULE:FACTORY`` or ``model.net: path/to/file.py:FACTORY`` names a user's own
    net (see :func:`user_net`), so it gets every command a bundled net gets.
    """
    if ":" in name:
        return user_net(name)
    entry = NETS.entry(name)
    return NetEntry(entry.factory, entry.description, entry.get("pixel_range", (0.0, 1.0)))


def is_user_net(name: str) -> bool:
    """Whether ``model.net`` names code outside groupact's registry (``MODULE:FACTORY`` or
    ``FILE.py:FACTORY``): loading such a net imports and runs that code."""
    return ":" in str(name)


def check_trusted_net(name: str, trust_code: bool, where: str) -> None:
    """Refuse a saved ``model.net`` that names code outside the registry unless the user says
    they trust it: a shared run folder would otherwise run whatever file or module it names.

    Runs before anything is imported; ``where`` names the file that holds the name.
    """
    if trust_code or not is_user_net(name):
        return
    target = str(name).rpartition(":")[0]
    what = f"the file {target}" if target.endswith(".py") else f"the module '{target}'"
    raise ConfigError(f"{where} names code outside groupact as model.net ({name}); loading it "
                      f"would run {what}: pass --trust-code (trust_code=True in load_run) only "
                      "if you trust that code")


def _is_stdlib(module: str) -> bool:
    """A module of Python's standard library (or builtins): never a net, whatever it holds."""
    top = str(module).split(".")[0]
    return top in sys.stdlib_module_names or top == "builtins"


def _load_user_module(target: str, name: str):
    """The module of ``model.net``: a dotted module on sys.path, or a .py file (relative paths
    from where groupact runs)."""
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise ConfigError(f"model.net={name}: {path} does not exist (a relative path is read "
                              "from the folder groupact runs in; give an absolute one)")
        spec = importlib.util.spec_from_file_location(f"_groupact_user_net_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:   # the user's code: say where it broke, in one line
            raise ConfigError(f"model.net={name}: importing {path} failed: "
                              f"{type(e).__name__}: {str(e)[:200]}") from None
        return module
    if _is_stdlib(target):   # refused before it is imported (`antigravity`, `os:getcwd`)
        raise ConfigError(f"model.net={name}: '{target}' is a Python standard-library module, "
                          "not a net; give MODULE:FACTORY or path/to/file.py:FACTORY of your own "
                          "code, where FACTORY(spec) returns (encoder, decoder)")
    try:
        return importlib.import_module(target)
    except ImportError as e:
        raise ConfigError(f"model.net={name}: cannot import module '{target}' ({e}); put it on "
                          "PYTHONPATH or give a path to a .py file") from None


def _check_factory(factory: object, name: str, target: str, attr: str) -> None:
    """A net factory is a Python function of one argument (the NetSpec) from the user's own
    code: a builtin, a class or a standard-library function (``os.getcwd``) is refused before
    it is called."""
    if not callable(factory):
        raise ConfigError(f"model.net={name}: '{target}' has no function '{attr}'")
    module = getattr(factory, "__module__", None) or ""
    if not inspect.isfunction(factory) or _is_stdlib(module):
        raise ConfigError(f"model.net={name}: '{attr}' is not a net factory (a Python function "
                          "FACTORY(spec) returning (encoder, decoder) nn.Modules); got "
                          f"{type(factory).__name__} from '{module or target}'")
    try:
        inspect.signature(factory).bind(None)
    except TypeError:
        raise ConfigError(f"model.net={name}: {attr} must take one argument, the NetSpec; its "
                          f"signature is {attr}{inspect.signature(factory)}") from None


def resolved_net_name(name: str) -> str:
    """``model.net`` with a user file's path made absolute (what a new run records, so evaluate,
    transform and resume find the file from any folder); other names unchanged."""
    target, sep, attr = name.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{Path(target).expanduser().resolve()}:{attr}"
    return name


def user_net(name: str) -> NetEntry:
    """A user's net from ``MODULE:FACTORY`` or ``FILE.py:FACTORY``: ``FACTORY(spec: NetSpec)``
    returns ``(encoder, decoder)`` modules; an attribute ``FACTORY.pixel_range = (lo, hi)`` says
    which pixel range the nets work in (default [0, 1]). The encoder returns (B, C, *fibre)."""
    target, _, attr = name.rpartition(":")
    if not target or not attr:
        raise ConfigError(f"model.net={name!r}: give MODULE:FACTORY or path/to/file.py:FACTORY")
    factory = getattr(_load_user_module(target, name), attr, None)
    _check_factory(factory, name, target, attr)

    def build(spec: NetSpec) -> tuple[nn.Module, nn.Module]:
        pair = factory(spec)
        if not (isinstance(pair, tuple) and len(pair) == 2
                and all(isinstance(m, nn.Module) for m in pair)):
            raise ConfigError(f"model.net={name}: {attr}(spec) must return (encoder, decoder) "
                              f"nn.Modules; got {type(pair).__name__}")
        return pair

    lo, hi = getattr(factory, "pixel_range", (0.0, 1.0))
    return NetEntry(build, f"your net {name}", (float(lo), float(hi)))


def init_output_bias(decoder: nn.Module, mean: float) -> None:
    """Start the decoder at the data's mean intensity ``mean`` (in [0, 1]): its last layer's bias
    at the output squashing's inverse of it (logit for a sigmoid, atanh(2·mean − 1) for Tanh).

    A sigmoid decoder that starts at 0.5 on mostly black data first learns to output black
    everywhere, a flat minimum some runs never leave; starting at the mean skips it. Needs a
    decoder that ends in a biased conv/linear layer and a squashing.
    """
    modules = list(decoder.modules())
    squash = next((m for m in reversed(modules) if isinstance(m, (nn.Sigmoid, nn.Tanh))), None)
    layers = [m for m in modules
              if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                                nn.Linear)) and m.bias is not None]
    if not layers or squash is None:
        raise ConfigError("model.init_output_bias needs a decoder whose biased conv/linear layer "
                          "feeds a Sigmoid or Tanh output; set model.init_output_bias=false")
    p = min(max(mean, 1e-3), 1 - 1e-3)
    if hasattr(squash, "inverse"):     # a squashing that knows its own inverse (ClampedSigmoid)
        value = squash.inverse(p)
    else:
        value = math.log(p / (1 - p)) if isinstance(squash, nn.Sigmoid) else math.atanh(2 * p - 1)
    with torch.no_grad():
        layers[-1].bias.fill_(value)


def build_nets(name: str, spec: NetSpec) -> tuple[nn.Module, nn.Module]:
    """The (encoder, decoder) pair a recipe names, built for its input shape."""
    return net_entry(name).build(spec)


__all__ = ["NETS", "NetEntry", "NetSpec", "build_nets", "check_trusted_net", "init_output_bias",
           "is_user_net", "net_entry", "resolved_net_name", "user_net"]
