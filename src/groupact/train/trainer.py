"""The training loop: batched pairs, Adam, best-validation checkpoint, JSONL log, exact resume.

(Over 400 lines because it is one class whose parts share one state: the step, the epoch, the
checkpointed position and the signals; the concerns around it live in the modules named below.)

:class:`Trainer` owns one run's data, model, optimiser and where training stands; a checkpoint
holds the position inside the epoch (batches done, the epoch generator's state, the partial loss
sums) and the last epoch's log record, so a resume continues at the very batch where the run
stopped. The run folder's safety lives in :mod:`groupact.train.folder`, and resuming's checks in
:mod:`groupact.train.resume`; the mask's own training (its estimator, exploration, freeze and
learning rate) lives with the mask (:class:`groupact.latent.ALDMask`), which the loop calls
through the hooks every mask has.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from groupact.build import group_from_config, model_from_config
from groupact.config import Config, TrainConfig, check_ranges, save_config
from groupact.data import PairBatch, Splits, TensorSet, batches, build_pair_source, fixed_pairs, \
    load_data, require_items, slice_pairs
from groupact.distributed import Comm
from groupact.errors import CheckpointError, ConfigError, GroupactError
from groupact.evaluate.metrics import psnr
from groupact.evaluate.probe import check_probe_labels
from groupact.io import append_jsonl, atomic_copy, atomic_write_json, load_checkpoint, \
    save_checkpoint
from groupact.losses import LossWeights, check_loss_fits_model, get_loss, with_homomorphism
from groupact.model import GroupActionAutoencoder
from groupact.nets import init_output_bias
from groupact.runs import RunPaths, check_net_version
from groupact.threads import use_threads
from groupact.train.folder import repair_run_folder
from groupact.train.unknown_g import PairElements

#: fields of a metrics.jsonl record that measure wall-clock time; all others are deterministic
TIMING_KEYS = ("seconds", "pairs_per_s")


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The RNG of one epoch: a run resumed at an epoch boundary replays it exactly."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def check_train_config(t: TrainConfig) -> None:
    """Ranges a type check cannot see, refused before any file is written."""
    checks = [
        (t.epochs >= 0, f"train.epochs must be 0 or more; got {t.epochs}"),
        (t.batch_size >= 1, f"train.batch_size must be 1 or more; got {t.batch_size}"),
        (math.isfinite(t.lr) and t.lr > 0, f"train.lr must be a positive number; got {t.lr}"),
        (t.threads >= 0, f"train.threads must be 0 (the free cores) or more; got {t.threads}"),
        (t.checkpoint_every >= 0,
         f"train.checkpoint_every must be 0 (epoch ends only) or more; got {t.checkpoint_every}"),
        (t.val_pairs is None or t.val_pairs >= 1,
         f"train.val_pairs must be 1 or more (or null for all); got {t.val_pairs}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _quiet(*_args: Any) -> None:
    """The log of ranks other than 0."""


class Trainer:
    """Owns one run: data, model, optimiser, where training stands, and its run folder's files.

    Where training stands is ``epoch`` (epochs done), ``batch`` (batches done in the current
    epoch), ``step`` (optimiser steps done), the current epoch's generator and partial sums: all of
    it goes into each checkpoint, so a resume continues at the very batch where the run stopped.
    """

    def __init__(self, cfg: Config, run_dir: str | Path, splits: Splits | None = None,
                 log: Callable[[str], None] = print, comm: Comm | None = None):
        check_train_config(cfg.train)
        check_ranges(cfg)
        self.comm = comm if comm is not None else Comm()
        self.cfg, self.paths = cfg, RunPaths(Path(run_dir))
        self.log = log if self.comm.is_main else _quiet
        if cfg.train.threads > 0:     # torch and the BLAS/OpenMP pools, kept the same size
            use_threads(cfg.train.threads)
        self.device = self.comm.device(cfg.train.device)
        self.splits = require_items(splits if splits is not None else load_data(cfg.data))
        if cfg.eval.probes:
            check_probe_labels(self.splits)
        self.group = group_from_config(cfg)
        self.source = build_pair_source(cfg, self.group, self.splits)
        # a run owns its process's global RNG (dropout-like ops would draw from it); seeded here,
        # saved in every checkpoint and restored on resume. Building the model leaves it alone.
        torch.manual_seed(cfg.train.seed)
        self.model = model_from_config(cfg, self.splits.image_shape, self.group).to(self.device)
        if cfg.model.init_output_bias:
            init_output_bias(self.model.decoder, float(self.splits.train.images.float().mean()))
        self.comm.broadcast_params(self.model)
        self.opt = torch.optim.Adam(self.model.param_groups(cfg.train.lr), lr=cfg.train.lr)
        self.steps_per_epoch = math.ceil(len(self.splits.train) / cfg.train.batch_size)
        self.sched = self._scheduler()
        self.loss_fn = get_loss(cfg.loss.kind)
        self.weights = LossWeights(cfg.loss.recon, cfg.loss.inv, cfg.loss.const,
                                   cfg.loss.relative, cfg.loss.hom, cfg.loss.coverage)
        check_loss_fits_model(cfg, self.model)
        if cfg.loss.hom:
            self.loss_fn = with_homomorphism(self.loss_fn)
        #: the element each step trains with: the pair's g, or the model's estimate of it
        self.elements = PairElements.from_config(cfg, self.model)
        # where training stands (all of it checkpointed)
        self.epoch, self.step, self.batch = 0, 0, 0
        self.best_val, self.best_epoch = math.inf, 0
        self.last_record: dict[str, Any] | None = None
        self._sums: dict[str, float] = {}
        self._gen: torch.Generator | None = None
        self._resume_gen_state: Tensor | None = None
        self._saved_step: int | None = None
        #: called once, after the first checkpoint is written (clears an overwritten run)
        self.on_first_save: Callable[[], None] | None = None
        # stopping
        self._stop_signal: int | None = None
        self._stop_now = False
        self.stopped_by: int | None = None
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
                self.opt, max_lr=[g["lr"] for g in self.opt.param_groups],
                total_steps=max(1, t.epochs * self.steps_per_epoch))
        raise ConfigError(f"unknown train.schedule '{t.schedule}'; use constant or onecycle")

    # --- state ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything a resume needs to continue exactly where training stands now."""
        mid_epoch = self.batch > 0 and self._gen is not None
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else None,
            "epoch": self.epoch, "step": self.step, "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "batch": self.batch if mid_epoch else 0,
            "epoch_rng": self._gen.get_state() if mid_epoch else None,
            "epoch_sums": dict(self._sums) if mid_epoch else {},
            "last_record": self.last_record,
            "config": self.cfg.to_dict(),
            "data_fingerprint": self.splits.fingerprint(),
            "input_shape": list(self.splits.image_shape),
            "pixel_range": list(self.model.pixel_range),
            "torch_rng": torch.get_rng_state(),
            "world_size": self.comm.world_size,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's state (format 1 files resume at their epoch's start)."""
        check_net_version(state, self.model, self.paths.last)
        if state.get("data_fingerprint") != self.splits.fingerprint():
            raise CheckpointError("the checkpoint was trained on other data (split fingerprint "
                                  "differs); resume with the run's own config.yaml")
        try:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError):
            raise CheckpointError("the checkpoint holds a different model than the run's config "
                                  "describes") from None
        if self.sched is not None and state.get("scheduler") is not None:
            self.sched.load_state_dict(state["scheduler"])
        self.epoch, self.step, self.best_val = state["epoch"], state["step"], state["best_val"]
        self.best_epoch = state.get("best_epoch", 0)
        self.batch = int(state.get("batch", 0))
        if not 0 <= self.batch <= self.steps_per_epoch:
            raise CheckpointError(f"the checkpoint stands at batch {self.batch} of an epoch of "
                                  f"{self.steps_per_epoch}; it is from another batch size")
        self._resume_gen_state = state.get("epoch_rng")
        if self.batch > 0 and self._resume_gen_state is None:
            raise CheckpointError("the checkpoint stands mid-epoch but lacks the epoch's "
                                  "generator state; it is corrupt")
        self._sums = dict(state.get("epoch_sums") or {})
        self.last_record = state.get("last_record")
        self._saved_step = self.step
        torch.set_rng_state(state["torch_rng"])

    def start_from(self, source: str | Path) -> None:
        """Fine-tuning: take the model weights (the mask's logits among them) of a checkpoint, or
        of a run folder's best one, and nothing else: the optimiser, the schedule and where
        training stands start afresh. Read with ``weights_only`` into the model this config
        builds, so no code of the source run is imported or run."""
        path = Path(source)
        if path.is_dir():
            path = RunPaths(path).best
        state = load_checkpoint(path)
        check_net_version(state, self.model, path)
        try:
            self.model.load_state_dict(state["model"])
        except (RuntimeError, ValueError, KeyError):
            raise ConfigError(f"train.init_from: {path} holds another model than this config "
                              "builds (its model.* settings differ); start from a run of the "
                              "same net, channels and mask") from None

    def save(self) -> None:
        """Write ``last.pt`` (rank 0 only), where training stands now; never non-finite weights.

        The loss check in :meth:`train_step` sees a NaN loss before its step; a finite loss can
        still step the weights to inf/NaN (the last step of an epoch, say), so the weights are
        checked here too, and a poisoned state is refused instead of overwriting a good file.
        """
        bad = [name for name, t in self.model.state_dict().items()
               if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            self._diverged(f"the weights became non-finite ({bad[0]}) at step {self.step}",
                           self.step)
        if self.comm.is_main:
            save_checkpoint(self.paths.last, self.state())
        self._saved_step = self.step
        if self.on_first_save is not None:
            hook, self.on_first_save = self.on_first_save, None
            hook()

    def _diverged(self, what: str, step: int) -> None:
        """Stop training with a message that says truly which checkpoint is left."""
        epoch = max(step - 1, 0) // self.steps_per_epoch + 1
        kept = (f"the last good checkpoint {self.paths.last} (step {self._saved_step}) is kept"
                if self._saved_step is not None else "no checkpoint was written")
        raise GroupactError(f"{what} (epoch {epoch}); training stopped and {kept}; "
                            "try a lower train.lr")

    @property
    def has_checkpoint(self) -> bool:
        """Whether this run (or the run it resumes) has a last.pt."""
        return self._saved_step is not None

    def repair_folder(self) -> None:
        """Make the run folder agree with the checkpoint being resumed (rank 0, before training)."""
        repair_run_folder(self.paths, self.epoch, self.batch, self.best_epoch, self.last_record,
                          self.log)

    # --- the loop -----------------------------------------------------------------------------
    def train_step(self, batch: PairBatch) -> dict[str, float]:
        """One optimiser step on a global batch, of which this rank trains on its own slice.

        With several ranks each slice's loss is weighted by its share of the batch and the
        weighted gradients are summed, which is the gradient of the global batch's mean loss.
        Loss statistics and the stop flag travel in one small all-reduce, so every rank sees the
        same loss (and stops at the same step) however the signals reached them.
        """
        self.model.train()
        n = batch.x1.shape[0]
        start, stop = self.comm.shard(n)
        batch = self.elements.hide(batch)        # g_known=false: the step never sees g
        # a rank whose slice is empty (batch smaller than the world) runs one pair at weight 0,
        # so that every rank takes part in the same collectives with the same shapes
        local = slice_pairs(batch, start, stop) if stop > start else slice_pairs(batch, 0, 1)
        local = self.elements.fill(self.model, local, self.step)
        mask = self.model.mask
        with mask.step(self.epoch, self._gen):   # ALD: its exploration epochs draw a mask here
            loss, parts = self.loss_fn(self.model, local, self.weights)
        stats = {"loss": float(loss.detach()), **parts}
        stop_now = self._stop_signal is not None
        if self.comm.distributed:
            share = (stop - start) / n
            loss = loss * share
            vec = torch.tensor([v * share for v in stats.values()] + [float(stop_now)],
                               dtype=torch.float64, device=self.device)
            values = self.comm.all_reduce_sum(vec).tolist()
            stats, stop_now = dict(zip(stats, values[:-1])), values[-1] > 0
        if not math.isfinite(stats["loss"]):
            self._diverged(f"the loss became {stats['loss']} at step {self.step + 1}",
                           self.step + 1)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        mask.set_gradient(self.model, local, self.epoch, self._gen)   # ALD: flip, freeze
        self.comm.all_reduce_grads(self.model.parameters())
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        self.step += 1
        self._stop_now = stop_now
        return stats

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss parts and PSNR on the fixed validation pairs (split across ranks)."""
        self.model.eval()
        n_all = self.val.x1.shape[0]
        start, stop = self.comm.shard(n_all)
        mine = stop > start
        val = self.elements.hide(self.val)       # g_known=false: estimated, as in training
        part = slice_pairs(val, start, stop) if mine else slice_pairs(val, 0, 1)
        totals: dict[str, float] = {}
        n = 0
        psnr_sum = 0.0
        for b in batches(part, 512):
            b = self.elements.fill(self.model, b, None)
            loss, parts = self.loss_fn(self.model, b, self.weights)
            k = b.x1.shape[0] if mine else 0
            for key, v in {"loss": float(loss), **parts}.items():
                totals[key] = totals.get(key, 0.0) + v * k
            psnr_sum += float(psnr(self.model(b.x1, b.g), b.x2).sum()) * (1 if mine else 0)
            n += k
        if self.comm.distributed:
            vec = torch.tensor(list(totals.values()) + [psnr_sum, n], dtype=torch.float64,
                               device=self.device)
            values = self.comm.all_reduce_sum(vec).tolist()
            totals, psnr_sum, n = dict(zip(totals, values[:-2])), values[-2], values[-1]
        out = {f"val_{k}": v / n for k, v in totals.items()}
        out["val_psnr"] = psnr_sum / n
        return out

    def run_epoch(self, bar=None) -> dict[str, float] | None:
        """Train the rest of the current epoch; None when a stop signal cut it short.

        The epoch's permutation is drawn first from its own generator; on a mid-epoch resume it is
        drawn again and the generator then set to the checkpoint's state, so the remaining
        batches and their pairs are the very ones the interrupted run would have drawn.
        """
        gen = epoch_generator(self.cfg.train.seed, self.epoch)
        perm = torch.randperm(len(self.splits.train), generator=gen)
        if self.batch > 0:
            gen.set_state(self._resume_gen_state)
        self._resume_gen_state = None
        self._gen = gen
        bs, every = self.cfg.train.batch_size, self.cfg.train.checkpoint_every
        while self.batch < self.steps_per_epoch:
            idx = perm[self.batch * bs:(self.batch + 1) * bs]
            batch = self.source.pairs(self.splits.train, idx.to(self.device), gen,
                                      device=self.device)
            for k, v in self.train_step(batch).items():
                self._sums[k] = self._sums.get(k, 0.0) + v
            self.batch += 1
            if bar is not None:
                bar.update(1)
            if self._should_stop():
                self.save()
                return None
            if every and self.step % every == 0 and self.batch < self.steps_per_epoch:
                self.save()
        return {f"train_{k}": v / self.steps_per_epoch for k, v in self._sums.items()}

    def _should_stop(self) -> bool:
        """A signal asked to stop: this process's own flag, or with several ranks, any rank's
        flag as of the last step's all-reduce (so all ranks stop after the same step)."""
        return self._stop_now if self.comm.distributed else self._stop_signal is not None

    def _handle_signal(self, signum, _frame) -> None:
        # only a flag: the step in flight finishes, then the loop saves and stops. A second
        # signal does not escalate (torchrun forwards the terminal's SIGINT a second time).
        if self._stop_signal is None:
            self._stop_signal = signum

    def end_epoch(self, train_stats: dict[str, float], seconds: float) -> dict[str, Any]:
        """Validate, then checkpoint, refresh best.pt and log, in that order (see repair)."""
        self.epoch += 1
        val_stats = self.validate()
        if not math.isfinite(val_stats["val_loss"]):
            self.epoch -= 1
            self._diverged(f"the validation loss became {val_stats['val_loss']} after step "
                           f"{self.step}", self.step)
        record = {"epoch": self.epoch, "step": self.step, "seconds": round(seconds, 3),
                  "pairs_per_s": round(len(self.splits.train) / max(seconds, 1e-9), 1),
                  "lr": self.opt.param_groups[0]["lr"], **train_stats, **val_stats,
                  **mask_record(self.model)}
        key = self.cfg.train.select
        improved = val_stats[key] < self.best_val
        if improved:
            self.best_val, self.best_epoch = val_stats[key], self.epoch
        record["best"] = improved
        self.batch, self._sums, self._gen = 0, {}, None
        self.last_record = record
        self.comm.check_in_sync(self.model)
        self.save()
        if self.comm.is_main:
            if improved:
                atomic_copy(self.paths.last, self.paths.best)
            append_jsonl(self.paths.metrics, record)
        return record

    def fit(self) -> dict[str, Any]:
        """Train for the remaining epochs; returns the last epoch's record.

        Sets :attr:`stopped_by` to the signal number when SIGINT/SIGTERM stopped it (after saving).
        """
        cfg = self.cfg
        if self.comm.is_main:
            self.paths.root.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.paths.config)
            atomic_write_json(self.paths.data, self.splits.summary())
        record: dict[str, Any] = dict(self.last_record or {})
        bar = None
        if cfg.train.progress and self.comm.is_main:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.train.epochs * self.steps_per_epoch, initial=self.step,
                       desc=cfg.name, unit="step", dynamic_ncols=True, leave=False)
        old = {}
        if threading.current_thread() is threading.main_thread():
            old = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGINT,
                                                                     signal.SIGTERM)}
        try:
            while self.epoch < cfg.train.epochs:
                t0 = time.perf_counter()
                train_stats = self.run_epoch(bar)
                if train_stats is None:
                    self.stopped_by = self._stop_signal or int(signal.SIGTERM)
                    self.log(f"stopped by {signal_name(self.stopped_by)} in epoch "
                             f"{self.epoch + 1} after batch {self.batch}/{self.steps_per_epoch}"
                             f" (step {self.step}); saved {self.paths.last}")
                    break
                record = self.end_epoch(train_stats, time.perf_counter() - t0)
                if bar is not None:
                    bar.set_postfix(loss=f"{train_stats['train_loss']:.4f}",
                                    val_psnr=f"{record['val_psnr']:.2f}",
                                    mask=f"{record['mask_fraction']:.2f}")
                else:
                    self.log(f"epoch {self.epoch}/{cfg.train.epochs} loss "
                             f"{train_stats['train_loss']:.4f} val_psnr "
                             f"{record['val_psnr']:.2f} mask {record['mask_fraction']:.2f}")
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if bar is not None:
                bar.close()
        if self.stopped_by is None and self._stop_signal is not None:
            self.stopped_by = self._stop_signal  # arrived after the last step: stop before eval
        self.comm.barrier()  # rank 0 has written everything before any rank leaves
        return record


def mask_record(model: GroupActionAutoencoder) -> dict[str, Any]:
    """The mask's state for the log: fraction variant, the 0/1 mask and σ(α)."""
    hard = model.mask.hard().cpu()
    return {"mask_fraction": float(hard.mean()),
            "mask": [int(v) for v in hard.tolist()],
            "mask_probs": [round(float(v), 4) for v in model.mask.probabilities().cpu().tolist()]}

