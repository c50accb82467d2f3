"""Training: the loop (:mod:`~groupact.train.trainer`), the run folder's safety
(:mod:`~groupact.train.folder`), resuming (:mod:`~groupact.train.resume`) and the one call that
ties them (:func:`~groupact.train.run.train_run`). How the mask trains is the mask's own
(:class:`groupact.latent.ALDMask`).

A run folder (see :mod:`groupact.runs`) holds ``config.yaml``, ``data.json``, ``metrics.jsonl`` and
``checkpoints/{last,best}.pt``. Every file is written whole or not at all, so a run killed at any
moment (SIGINT, SIGTERM, SIGKILL, a power cut) resumes from ``last.pt`` and ends bitwise equal, on
the CPU, to a run never interrupted. SIGINT/SIGTERM finish the current step, save a checkpoint and
stop; ``train.checkpoint_every`` bounds what a SIGKILL loses (it is replayed exactly). Training is
data-parallel under ``torchrun`` (see :mod:`groupact.distributed`).
"""

from groupact.train.folder import TRASH
from groupact.train.resume import RESUMABLE_KEYS, check_resume_config, resume_config
from groupact.train.run import history, train_run
from groupact.train.trainer import TIMING_KEYS, Trainer, epoch_generator, \
    mask_record, signal_name

__all__ = ["RESUMABLE_KEYS", "TIMING_KEYS", "TRASH", "Trainer",
           "check_resume_config", "epoch_generator", "history", "mask_record", "resume_config",
           "signal_name", "train_run"]
