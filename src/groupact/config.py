"""Typed run configuration: YAML recipes plus dotted command-line overrides.

A recipe is a YAML file (bundled ones live in ``groupact/recipes``) that fills this schema; every key
is checked, so a typo is an error that names the nearest valid key, never a silently ignored
setting. The resolved config is written into every run folder, so each number has its config.
The schema-free machinery (bounded YAML, strict dict → dataclass, overrides) is
:mod:`groupact.strict`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from groupact.errors import ConfigError, did_you_mean
from groupact.io import atomic_write_text
from groupact.latent.masks import MASKS, Estimator
from groupact.strict import (MAX_YAML_BYTES, SAFE_NAME, from_dict, load_yaml, merge,
                             parse_override, shown)


#: config fields with a fixed set of values: checked when the config is read, so a typo fails
#: at once (not when the one command that reads the field runs); the registry-valued names
#: (data.kind, group.name, model.net, the mask, action and loss kinds) are checked by their
#: registries when the run is built
Inside = Literal["all", "foreground"]
PairMode = Literal["anchor", "both"]
Readout = Literal["invariant", "z", "zi", "zv"]
Schedule = Literal["constant", "onecycle"]
Select = Literal["val_loss", "val_recon"]
ActionInit = Literal["fixed", "random"]
#: train.select: the validation number whose lowest value picks best.pt → how reports name it
SELECT_KEYS = {"val_loss": "validation loss", "val_recon": "validation reconstruction error"}


@dataclass
class DataConfig:
    """Where the images come from and how they are split."""

    kind: str = "mnist5k"          # see `groupact info` for the list
    path: str | None = None        # file or folder for kinds that read user files
    n_train: int | None = None     # split sizes; None: the dataset's own default
    n_val: int | None = None
    n_test: int | None = None
    split_seed: int = 0
    size: int | None = None        # resize user images to size×size (None: refuse a mismatch)
    channels: int | None = None    # convert user images to this many channels (1 or 3)
    block_prob: float = 0.0        # rotated & blocked MNIST: chance of a white square per pair
    block_size: int = 7
    n_items: int | None = None     # generated datasets: how many subjects/shapes/planes
    n_poses: int = 100             # planes: rendered poses per plane
    stratify: bool = True          # planes: each class gives its share of test/val planes
    #                                (False: the plain random cut of groupact ≤ 0.4.0)
    cache_dir: str | None = None   # generated datasets: cache folder (default ~/.cache/groupact)
    heldout: list[str] | None = None  # brain3d: real brains whose deformed copies are the test split


@dataclass
class GroupConfig:
    """The group and its parameters (only those the named group uses are read)."""

    name: str = "c4"
    n: int = 4                     # cn: the order
    size: int = 28                 # shift: image side in pixels
    unit: int = 1                  # shift: pixels per step (= encoder stride for exact latents)
    a_max: float = 2.0             # contrast: a in [1/a_max, a_max]
    b_max: float = 1.0             # contrast: b in [-b_max, b_max]
    inside: Inside | None = "all"  # contrast: "foreground" acts only inside the object
    threshold: float = 0.05        # contrast, inside=foreground: pixels ≤ this are background
    eps: float = 1e-3              # contrast: x is clipped to [eps, 1 − eps] before the logit


@dataclass
class PairsConfig:
    mode: PairMode = "anchor"      # anchor: (x, T_g x) (authors); both: (g1·x, g2·x) (Jin et al.)
    g_known: bool = True           # false: train on the model's estimate of g, never the pair's
    g_warmup_steps: int = 300      # g_known=false: first steps plain autoencoding (g = identity)


@dataclass
class MaskConfig:
    kind: str = "ald"              # ald | fixed | all
    tau: float = 0.5
    init_logit: float = 0.0
    init_std: float = 0.01
    variant: list[int] | None = None      # fixed: the variant channels
    variant_fraction: float = 0.5         # fixed, when `variant` is not given: the first fraction
    freeze_epochs: int = 0         # ald: keep the initial mask for this many epochs
    estimator: Estimator = "ste"   # ald: ste (the paper's) | flip (the exact two-state difference)
    lr_scale: float = 1.0          # ald: the mask logits' learning rate is train.lr × this
    sample_epochs: int = 0         # ald: draw M ~ Bernoulli(σ(α)) per step for this many epochs


@dataclass
class ActionConfig:
    kind: str = "spatial"          # spatial | matrix | affine | steerable | learned
    init: ActionInit = "fixed"     # learned: start at the group's own ρ (fixed) or elsewhere
    orthogonal: bool = True        # learned, finite groups: ρ(g) orthogonal (else free matrices)
    lr_scale: float = 1.0          # the action's parameters (a learned ρ_θ) train at lr × this


@dataclass
class ModelConfig:
    net: str = "authors-mnist"
    channels: int = 64
    widths: list[int] = field(default_factory=lambda: [32])
    latent_dim: int = 24
    fibre: int = 2
    frequencies: int = 8           # steerable-polar: angular frequencies K per ring (fibre 2K+1)
    blocks: int = 2                # res2d/res3d: ResBlocks in the encoder and in the decoder
    factor: int = 2                # res2d/res3d: space-to-depth factor (latent side = side/factor)
    ball: bool = False             # res2d/res3d: latent masked to the inscribed ball/disc
    out_margin: float = 0.0        # res2d/res3d: output σ stretched by this, clamped to [0, 1]
    sky_copy: bool = False         # render-composite: the background the picture shows is copied
    #                                through the latent as it is; only the cut-out is painted
    cut_margin: int = 0            # render-composite: the cut-out α̂ grown by this many pixels
    init_output_bias: bool = False  # decoder's last bias at logit(mean training pixel)
    readout: Readout = "invariant"  # features offered downstream: invariant | z | zi | zv
    mask: MaskConfig = field(default_factory=MaskConfig)
    action: ActionConfig = field(default_factory=ActionConfig)


@dataclass
class LossConfig:
    kind: str = "paper"            # paper | symmetric | autoencoder (plain AE baseline)
    recon: float = 1.0
    inv: float = 1.0
    const: float = 1.0
    relative: bool = False         # latent terms divided by sg[target energy] (no collapse reward)
    hom: float = 0.0               # learned actions: weight of ‖ρ(a)ρ(b) − ρ(ab)‖² + ‖ρ(e) − I‖²
    coverage: float = 0.0          # render-composite on rendered data: weight of the object
    #                                coverage's cross-entropies against the renderer's alpha (the
    #                                encoder's for x1, the decoder's drawn alpha for x̂2)


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    schedule: Schedule = "constant"  # constant | onecycle
    seed: int = 0
    device: str = "auto"           # auto (cuda → mps → cpu) | cpu | cuda | cuda:1 | mps
    threads: int = 0               # threads on CPU, torch's and BLAS's (0: the free cores)
    progress: bool = True
    val_pairs: int | None = None   # validation pairs per epoch (None: the whole val split)
    checkpoint_every: int = 0      # also checkpoint every N steps (0: at epoch ends only)
    select: Select = "val_loss"    # best.pt: lowest val_loss (the paper) | val_recon
    # fine-tuning: start from the model weights (mask logits included) of this checkpoint, or of
    # a run folder's checkpoints/best.pt; optimiser, schedule and epochs start afresh
    init_from: str | None = None


@dataclass
class EvalConfig:
    seed: int = 1234               # test pairs are fixed by this seed: every method sees the same
    n_pairs: int | None = None     # test pairs (None: one per test image)
    # the linear probes: scikit-learn's LogisticRegression fitted to convergence for every C of
    # probe_c, the C with the best validation accuracy kept (docs/PROTOCOL.md)
    probe_c: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    probe_max_iter: int = 2000     # sklearn: lbfgs iterations a fit may take before it counts
    #                                as not converged (metrics.json: probes_converged)
    # probes train, choose C and test on a seeded subset of at most this many items of each split
    # (None: all): 1,000 keeps an MNIST-sized probe a 1,000-dimensional problem (probe.row_space),
    # seconds instead of a minute, and is the protocol of the committed results tables
    probe_items: int | None = 1000
    probes: bool = True            # the linear probes (most of an evaluation's time on big latents)
    orbit_probes: bool = True      # the orbit-pooled baselines (|H| encoder passes per image)
    figures: bool = True


@dataclass
class Config:
    name: str = "custom"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    group: GroupConfig = field(default_factory=GroupConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- recipes -----------------------------------------------------------------------------------

def recipe_names() -> list[str]:
    """The recipes bundled with groupact."""
    root = resources.files("groupact") / "recipes"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def read_recipe(name_or_path: str) -> dict[str, Any]:
    """A bundled recipe by name, or a YAML file by path, as a dict."""
    path = Path(name_or_path)
    # a run folder named like a bundled recipe (`--run-dir rotmnist-so2`) in the working
    # directory must not shadow that recipe; any other folder is a mistake worth naming
    bundled = name_or_path in recipe_names()
    if path.suffix in (".yaml", ".yml") or path.is_file() or (path.is_dir() and not bundled):
        if path.is_dir():
            raise ConfigError(f"{path} is a folder, not a recipe file; give a recipe name (see "
                              "`groupact info`) or a .yaml file")
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        text = read_text_file(path, "recipe file")
    else:
        if not SAFE_NAME.fullmatch(name_or_path) or ".." in name_or_path:
            res = None   # not a name: never joined to the recipes folder
        else:
            res = resources.files("groupact") / "recipes" / f"{name_or_path}.yaml"
        if res is None or not res.is_file():
            hint = did_you_mean(name_or_path, recipe_names())
            raise ConfigError(f"unknown recipe '{name_or_path}'{hint} (see `groupact info`, or "
                              "give a path to a .yaml file)")
        text = res.read_text(encoding="utf-8")
    data = load_yaml(text, f"recipe {name_or_path}") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {name_or_path} must be a YAML mapping")
    return data


def read_text_file(path: Path, what: str) -> str:
    """A small text file's contents, or a one-line error (too big, not text, unreadable)."""
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"{what} {path} is {path.stat().st_size:,} bytes; a config or plan "
                              f"is at most {MAX_YAML_BYTES:,}: is it the right file?")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not text (UTF-8); give a YAML file") from None
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None


#: the largest seed: 63 bits, so that the offsets added to derive further seeds stay inside the
#: 64 bits that torch's generators take
MAX_SEED = 2 ** 63 - 1


def check_ranges(cfg: Config) -> None:
    """Ranges a type check cannot see (sizes, counts, probabilities), refused before a run
    writes anything; each message names the key and what it takes."""
    d, g, m, lo, e = cfg.data, cfg.group, cfg.model, cfg.loss, cfg.eval
    checks = [
        *[(v is None or v >= 1, f"data.{k} must be 1 or more (or null for the dataset's "
           f"default); got {v}") for k, v in (("n_train", d.n_train), ("n_val", d.n_val),
                                               ("n_test", d.n_test), ("n_items", d.n_items))],
        (d.size is None or 1 <= d.size <= 4096, f"data.size must be 1..4096 pixels; got {d.size}"),
        (d.channels in (None, 1, 3), f"data.channels must be 1 or 3 (or null); got {d.channels}"),
        (0.0 <= d.block_prob <= 1.0, f"data.block_prob must lie in [0, 1]; got {d.block_prob}"),
        (d.block_size >= 1, f"data.block_size must be 1 or more; got {d.block_size}"),
        (d.n_poses >= 1, f"data.n_poses must be 1 or more; got {d.n_poses}"),
        *[(0 <= v <= MAX_SEED, f"{k} must be 0 or more and at most 2**63 - 1; got {shown(v)}")
          for k, v in (("data.split_seed", d.split_seed), ("train.seed", cfg.train.seed),
                       ("eval.seed", e.seed))],
        (g.n >= 1, f"group.n must be 1 or more; got {g.n}"),
        (g.size >= 1, f"group.size must be 1 or more; got {g.size}"),
        (g.unit >= 1, f"group.unit must be 1 or more pixels; got {g.unit}"),
        (g.a_max >= 1.0, f"group.a_max must be 1 or more (a lies in [1/a_max, a_max]); got "
         f"{g.a_max}"),
        (g.b_max >= 0.0, f"group.b_max must be 0 or more; got {g.b_max}"),
        (0.0 <= g.threshold < 1.0, f"group.threshold must lie in [0, 1); got {g.threshold}"),
        (0.0 < g.eps < 0.5, f"group.eps must lie in (0, 0.5); got {g.eps}"),
        (m.channels >= 1, f"model.channels must be 1 or more; got {m.channels}"),
        (all(w >= 1 for w in m.widths), f"model.widths must all be 1 or more; got {m.widths}"),
        (m.blocks >= 0, f"model.blocks must be 0 or more; got {m.blocks}"),
        (m.factor >= 1, f"model.factor must be 1 or more; got {m.factor}"),
        (m.latent_dim >= 1, f"model.latent_dim must be 1 or more; got {m.latent_dim}"),
        (m.fibre >= 1, f"model.fibre must be 1 or more; got {m.fibre}"),
        (m.frequencies >= 1, f"model.frequencies must be 1 or more; got {m.frequencies}"),
        (m.action.lr_scale > 0.0, f"model.action.lr_scale must be positive; got "
         f"{m.action.lr_scale}"),
        (cfg.pairs.g_warmup_steps >= 0, f"pairs.g_warmup_steps must be 0 or more; got "
         f"{cfg.pairs.g_warmup_steps}"),
        (cfg.loss.hom >= 0.0, f"loss.hom must be 0 or more; got {cfg.loss.hom}"),
        (cfg.loss.coverage >= 0.0, f"loss.coverage must be 0 or more; got {cfg.loss.coverage}"),
        (min(lo.recon, lo.inv, lo.const) >= 0.0, "loss.recon, loss.inv and loss.const must be 0 "
         f"or more; got {lo.recon}, {lo.inv}, {lo.const}"),
        (e.n_pairs is None or e.n_pairs >= 1, f"eval.n_pairs must be 1 or more (or null); got "
         f"{e.n_pairs}"),
        (len(e.probe_c) >= 1 and all(c > 0 for c in e.probe_c),
         f"eval.probe_c must list one or more positive C values; got {shown(e.probe_c)}"),
        (e.probe_max_iter >= 1, f"eval.probe_max_iter must be 1 or more; got "
         f"{e.probe_max_iter}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    check_mask(m)


def check_mask(m: ModelConfig) -> None:
    """The ``model.mask`` section, checked by the mask it names: one is built for
    ``model.channels`` channels, so each rule lives with its mask (τ in :class:`ALDMask`, the
    listed channels in :class:`FixedMask`). Keys the kind does not read are left alone, as the
    build leaves them; a kind not registered yet is the build's to refuse."""
    if m.mask.kind in MASKS:
        MASKS.build_from(m.mask.kind, m.mask, skip=("kind",), strict=False, channels=m.channels,
                         generator=torch.Generator())


#: split sizes that belong to a recipe's own dataset (see :func:`load_config`)
SPLIT_KEYS = ("n_train", "n_val", "n_test")


def load_config(recipe: str | dict[str, Any], overrides: list[str] | None = None) -> Config:
    """A recipe (name, path or dict) with ``key=value`` overrides applied, fully checked.

    An override that changes ``data.kind`` (your own images on a recipe written for MNIST) drops
    the recipe's split sizes that no override sets: 3,200 / 800 / 1,000 are sizes of the
    recipe's dataset, and the new one is split by its own default instead (for npz / folder
    data: a sixth each for validation and test, the rest for training).
    """
    data = read_recipe(recipe) if isinstance(recipe, str) else dict(recipe)
    recipe_kind = data["data"].get("kind") if isinstance(data.get("data"), dict) else None
    set_by_user: set[str] = set()
    for text in overrides or []:
        override = parse_override(text)
        set_by_user.update(override.get("data", {}) if isinstance(override.get("data"), dict)
                           else ())
        data = merge(data, override)
    section = data.get("data")
    if isinstance(section, dict) and section.get("kind") != recipe_kind:
        data["data"] = {k: v for k, v in section.items()
                        if k not in SPLIT_KEYS or k in set_by_user}
    return from_dict(Config, data)


def config_yaml(cfg: Config) -> str:
    """The resolved config as YAML, in field order, unicode as itself (λ, not \\u03bb)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)


def save_config(cfg: Config, path: Path) -> None:
    atomic_write_text(path, config_yaml(cfg))
