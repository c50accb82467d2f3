"""The training loop: batched pairs, Adam, best-validation checkpoint, JSONL log, resume.

A run folder holds everything needed to trust and reuse a result:
``config.yaml`` (resolved), ``data.json`` (provenance + split fingerprint), ``metrics.jsonl``
(one line per epoch), ``checkpoints/best.pt`` (lowest validation loss) and ``checkpoints/last.pt``.
"""

from __future__ import annotations

import math
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from groupact.build import group_from_config, model_from_config
from groupact.config import Config, save_config
from groupact.data import PairBatch, PairSource, Splits, TensorSet, build_pair_source, load_data
from groupact.errors import CheckpointError, GroupactError
from groupact.evaluate.metrics import psnr
from groupact.io import (append_jsonl, atomic_write_json, load_checkpoint, read_jsonl,
                         save_checkpoint)
from groupact.losses import LossWeights, get_loss
from groupact.model import GroupActionAutoencoder


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda, then mps, then cpu; anything else is passed to torch (checked)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise GroupactError(f"unknown train.device '{name}'; use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GroupactError("train.device=cuda but no CUDA GPU is visible; use train.device=cpu")
    return dev


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The RNG of one epoch: a run resumed at an epoch boundary replays it exactly."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def fixed_pairs(source: PairSource, split: TensorSet, n: int | None, seed: int,
                non_identity: bool, device: torch.device) -> PairBatch:
    """Pairs fixed by a seed: validation and test pairs are the same for every run and method."""
    gen = torch.Generator().manual_seed(seed)
    count = len(split) if n is None else n
    idx = torch.arange(count) % len(split)
    return source.pairs(split, idx, gen, non_identity=non_identity, device=device)


def batches(batch: PairBatch, size: int):
    """Slices of a fixed pair batch, for memory-bounded evaluation."""
    n = batch.x1.shape[0]
    for i in range(0, n, size):
        yield PairBatch(batch.x1[i:i + size], batch.x2[i:i + size], batch.g[i:i + size],
                        None if batch.labels is None else batch.labels[i:i + size])


@dataclass
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def best(self) -> Path:
        return self.root / "checkpoints" / "best.pt"

    @property
    def last(self) -> Path:
        return self.root / "checkpoints" / "last.pt"

    @property
    def figures(self) -> Path:
        return self.root / "figures"


class Trainer:
    """Owns one run: data, model, optimiser, and the files of its run folder."""

    def __init__(self, cfg: Config, run_dir: str | Path, splits: Splits | None = None,
                 log: Callable[[str], None] = print):
        self.cfg, self.paths, self.log = cfg, RunPaths(Path(run_dir)), log
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        self.device = resolve_device(cfg.train.device)
        self.splits = splits if splits is not None else load_data(cfg.data)
        self.group = group_from_config(cfg)
        self.source = build_pair_source(cfg, self.group, self.splits)
        self.model = model_from_config(cfg, self.splits.image_shape, self.group).to(self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.train.lr)
        self.steps_per_epoch = math.ceil(len(self.splits.train) / cfg.train.batch_size)
        self.sched = self._scheduler()
        self.loss_fn = get_loss(cfg.loss.kind)
        self.weights = LossWeights(cfg.loss.recon, cfg.loss.inv, cfg.loss.const)
        self.epoch, self.step, self.best_val = 0, 0, math.inf
        self._stop_signal: int | None = None
        for part in ("train", "val", "test"):  # whole splits on the device, gathered by index
            ts: TensorSet = getattr(self.splits, part)
            ts.images = ts.images.to(self.device)
            if ts.labels is not None:
                ts.labels = ts.labels.to(self.device)
        self.val = fixed_pairs(self.source, self.splits.val, cfg.train.val_pairs,
                               cfg.eval.seed + 1, non_identity=False, device=self.device)

    def _scheduler(self):
        t = self.cfg.train
        if t.schedule == "constant":
            return None
        if t.schedule == "onecycle":
            return torch.optim.lr_scheduler.OneCycleLR(
                self.opt, max_lr=t.lr, total_steps=max(1, t.epochs * self.steps_per_epoch))
        raise GroupactError(f"unknown train.schedule '{t.schedule}'; use constant or onecycle")

    # --- state ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else None,
            "epoch": self.epoch, "step": self.step, "best_val": self.best_val,
            "config": self.cfg.to_dict(),
            "data_fingerprint": self.splits.fingerprint(),
            "input_shape": list(self.splits.image_shape),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("data_fingerprint") != self.splits.fingerprint():
            raise CheckpointError("the checkpoint was trained on other data (split fingerprint "
                                  "differs); resume with the run's own config.yaml")
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError:
            raise CheckpointError("the checkpoint holds a different model than the run's config "
                                  "describes") from None
        self.opt.load_state_dict(state["optimizer"])
        if self.sched is not None and state.get("scheduler") is not None:
            self.sched.load_state_dict(state["scheduler"])
        self.epoch, self.step, self.best_val = state["epoch"], state["step"], state["best_val"]
        torch.set_rng_state(state["torch_rng"])

    # --- the loop -----------------------------------------------------------------------------
    def train_step(self, batch: PairBatch) -> dict[str, float]:
        self.model.train()
        loss, parts = self.loss_fn(self.model, batch, self.weights)
        if not torch.isfinite(loss):
            raise GroupactError(f"the loss became {float(loss)} at step {self.step}; the last "
                                f"good checkpoint is kept in {self.paths.last.parent} (try a "
                                "lower train.lr)")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        self.step += 1
        return {"loss": float(loss.detach()), **parts}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        totals: dict[str, float] = {}
        n = 0
        psnr_sum = 0.0
        for b in batches(self.val, 512):
            loss, parts = self.loss_fn(self.model, b, self.weights)
            k = b.x1.shape[0]
            for key, v in {"loss": float(loss), **parts}.items():
                totals[key] = totals.get(key, 0.0) + v * k
            psnr_sum += float(psnr(self.model(b.x1, b.g), b.x2).sum())
            n += k
        out = {f"val_{k}": v / n for k, v in totals.items()}
        out["val_psnr"] = psnr_sum / n
        return out

    def run_epoch(self, bar=None) -> dict[str, float]:
        gen = epoch_generator(self.cfg.train.seed, self.epoch)
        perm = torch.randperm(len(self.splits.train), generator=gen)
        sums: dict[str, float] = {}
        bs = self.cfg.train.batch_size
        for i in range(0, len(perm), bs):
            idx = perm[i:i + bs]
            batch = self.source.pairs(self.splits.train, idx.to(self.device), gen,
                                      device=self.device)
            for k, v in self.train_step(batch).items():
                sums[k] = sums.get(k, 0.0) + v
            if bar is not None:
                bar.update(1)
            if self._stop_signal is not None:
                break
        return {f"train_{k}": v / self.steps_per_epoch for k, v in sums.items()}

    def _handle_signal(self, signum, _frame) -> None:
        self._stop_signal = signum

    def fit(self) -> dict[str, Any]:
        """Train for the remaining epochs; returns the last epoch's record."""
        cfg = self.cfg
        self.paths.root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.paths.config)
        atomic_write_json(self.paths.data, self.splits.summary())
        record: dict[str, Any] = {}
        bar = None
        if cfg.train.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.train.epochs * self.steps_per_epoch, initial=self.step,
                       desc=cfg.name, unit="step", dynamic_ncols=True, leave=False)
        old = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.epoch < cfg.train.epochs:
                t0 = time.perf_counter()
                train_stats = self.run_epoch(bar)
                if self._stop_signal is not None:
                    self.log(f"stopped by signal {self._stop_signal}; resume with --resume "
                             f"{self.paths.root}")
                    break
                seconds = time.perf_counter() - t0
                self.epoch += 1
                val_stats = self.validate()
                record = {"epoch": self.epoch, "step": self.step, "seconds": round(seconds, 3),
                          "pairs_per_s": round(len(self.splits.train) / seconds, 1),
                          "lr": self.opt.param_groups[0]["lr"], **train_stats, **val_stats,
                          **mask_record(self.model)}
                improved = val_stats["val_loss"] < self.best_val
                if improved:
                    self.best_val = val_stats["val_loss"]
                record["best"] = improved
                save_checkpoint(self.paths.last, self.state())
                if improved:
                    shutil.copyfile(self.paths.last, self.paths.best)
                append_jsonl(self.paths.metrics, record)
                if bar is not None:
                    bar.set_postfix(loss=f"{train_stats['train_loss']:.4f}",
                                    val_psnr=f"{val_stats['val_psnr']:.2f}",
                                    mask=f"{record['mask_fraction']:.2f}")
                else:
                    self.log(f"epoch {self.epoch}/{cfg.train.epochs} loss "
                             f"{train_stats['train_loss']:.4f} val_psnr "
                             f"{val_stats['val_psnr']:.2f} mask {record['mask_fraction']:.2f}")
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if bar is not None:
                bar.close()
        return record


def mask_record(model: GroupActionAutoencoder) -> dict[str, Any]:
    """The mask's state for the log: fraction variant, the 0/1 mask and σ(α)."""
    hard = model.mask.hard().cpu()
    return {"mask_fraction": float(hard.mean()),
            "mask": [int(v) for v in hard.tolist()],
            "mask_probs": [round(float(v), 4) for v in model.mask.probabilities().cpu().tolist()]}


def train_run(cfg: Config, run_dir: str | Path, resume: bool = False,
              overwrite: bool = False, log: Callable[[str], None] = print) -> Trainer:
    """Train a recipe into ``run_dir`` (continuing it with ``resume``); returns the trainer."""
    paths = RunPaths(Path(run_dir))
    if resume:
        if not paths.last.is_file():
            raise CheckpointError(f"{run_dir} holds no checkpoints/last.pt to resume from")
        trainer = Trainer(cfg, run_dir, log=log)
        trainer.load_state(load_checkpoint(paths.last, trainer.device))
        log(f"resuming {run_dir} at epoch {trainer.epoch}")
    else:
        if paths.root.exists() and any(paths.root.iterdir()):
            if not overwrite:
                raise GroupactError(f"run folder {run_dir} already exists; use --resume to "
                                    "continue it, --overwrite to start again, or --run-dir")
            shutil.rmtree(paths.root)
        trainer = Trainer(cfg, run_dir, log=log)
    trainer.fit()
    return trainer


def history(run_dir: str | Path) -> list[dict[str, Any]]:
    return read_jsonl(RunPaths(Path(run_dir)).metrics)

