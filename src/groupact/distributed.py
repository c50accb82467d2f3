"""Data-parallel training on PyTorch's own engine: ``torchrun`` processes, gloo on CPU, NCCL on GPU.

One process per device; every process holds the whole model and the whole (in-memory) dataset.
Each step, every rank builds the SAME global batch of pairs from the shared per-epoch generator (so
the pairs are those a single process would draw) and trains on its slice of it; the gradients of the
slices, each weighted by its share of the batch, are summed across ranks, so every rank applies the
single-process update up to floating-point summation order. Rank 0 alone writes files.

We reduce gradients by hand instead of wrapping the model in ``DistributedDataParallel``: the losses
call ``model.encode``/``model.decode`` directly, which DDP's forward hooks would not see, and a
hand reduce lets slices of unequal size (the last batch of an epoch) weigh exactly what they should.

:class:`Comm` is the single-process case (every collective is the identity), so the trainer has one
code path; :class:`DistComm` is the torch.distributed one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
from torch import Tensor

from groupact.errors import GroupactError

T = TypeVar("T")


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """``auto`` → cuda, then mps, then cpu; anything else is passed to torch, and refused with
    the real cause (unknown name, no such GPU) before any checkpoint is read."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise GroupactError(f"unknown {key} '{str(name)[:40]}'; use auto, cpu, cuda, cuda:N or "
                            "mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise GroupactError(f"{key}={name} but no CUDA GPU is visible on this machine; use "
                                f"{key}=cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise GroupactError(f"{key}={name} but this machine has "
                                f"{torch.cuda.device_count()} GPU(s); use cuda:0 or cpu")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise GroupactError(f"{key}=mps but no Apple GPU (MPS) is available; use {key}=cpu")
    elif dev.type != "cpu":
        raise GroupactError(f"{key}={name} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return dev


#: environment variables torchrun sets for every worker
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class Comm:
    """A single process: rank 0 of 1. Every collective is the identity."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this rank writes files and logs (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's contiguous part ``[start, stop)`` of a global batch of ``n`` items.

        Sizes differ by at most one; a rank may get none when ``n`` < world size.
        """
        return (n * self.rank) // self.world_size, (n * (self.rank + 1)) // self.world_size

    def device(self, name: str) -> torch.device:
        """The device this rank trains on, from ``train.device`` (see :func:`resolve_device`)."""
        return resolve_device(name)

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """Sum ``t`` over ranks (in place and returned)."""
        return t

    def all_reduce_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Sum the gradients of ``params`` over ranks (each rank already weighted its own)."""

    def broadcast_params(self, module: torch.nn.Module) -> None:
        """Make every rank's parameters and buffers rank 0's."""

    def check_in_sync(self, module: torch.nn.Module) -> None:
        """Raise if any rank's parameters differ from rank 0's (a bug, never a user error)."""

    def run_on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and hand its result, or its error, to every rank."""
        return fn()

    def barrier(self) -> None:
        """Wait for every rank."""

    def close(self) -> None:
        """Leave the process group (no-op for one process)."""


class DistComm(Comm):
    """One rank of a ``torchrun`` job, over an initialised ``torch.distributed`` process group."""

    def __init__(self, rank: int, world_size: int, local_rank: int):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank

    def device(self, name: str) -> torch.device:
        """Rank-local device: any CUDA choice becomes ``cuda:LOCAL_RANK`` (one GPU per process)."""
        dev = resolve_device(name)
        if dev.type == "cuda":
            if self.local_rank >= torch.cuda.device_count():
                raise GroupactError(f"local rank {self.local_rank} has no GPU (this node has "
                                    f"{torch.cuda.device_count()}); lower --nproc_per_node")
            dev = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(dev)
        elif dev.type != "cpu":
            raise GroupactError(f"distributed training runs on cpu (gloo) or cuda (nccl), not "
                                f"{dev.type}; set train.device=cpu or cuda")
        return dev

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        import torch.distributed as dist
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def all_reduce_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        # one flat buffer: one collective per step however many tensors the model has. Which
        # parameters have a gradient is decided by the graph, the same on every rank.
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.all_reduce_sum(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def broadcast_params(self, module: torch.nn.Module) -> None:
        import torch.distributed as dist
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

    def check_in_sync(self, module: torch.nn.Module) -> None:
        import torch.distributed as dist
        with torch.no_grad():
            mine = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
            ref = mine.clone()
            dist.broadcast(ref, src=0)
            bad = torch.tensor([float(not torch.equal(mine, ref))], device=mine.device)
            self.all_reduce_sum(bad)
        if float(bad) > 0:
            raise RuntimeError("distributed ranks diverged: parameters differ from rank 0's")

    def run_on_main(self, fn: Callable[[], T]) -> T:
        import torch.distributed as dist
        if self.is_main:
            try:
                result = fn()
            except BaseException as e:  # tell the other ranks, then fail here with the original
                kind = "user" if isinstance(e, GroupactError) else "bug"
                err = type(e) if kind == "user" else RuntimeError
                dist.broadcast_object_list([(kind, err, str(e))], src=0)
                raise
            dist.broadcast_object_list([("ok", result, None)], src=0)
            return result
        payload: list[Any] = [None]
        dist.broadcast_object_list(payload, src=0)
        kind, value, message = payload[0]
        if kind == "ok":
            return value
        if kind == "user":
            raise value(message)
        raise RuntimeError(f"rank 0 failed: {message}")

    def barrier(self) -> None:
        import torch.distributed as dist
        dist.barrier()

    def close(self) -> None:
        import torch.distributed as dist
        if dist.is_initialized():
            # every rank leaves together: a rank tearing gloo down while a peer still talks to
            # it aborts that peer ("terminate called without an active exception")
            try:
                dist.barrier()
            except RuntimeError:
                pass  # a peer already failed; its error is the one to report
            dist.destroy_process_group()


def launched_by_torchrun() -> bool:
    """Whether this process is a ``torchrun`` worker (its rendezvous variables are set)."""
    return all(k in os.environ for k in TORCHRUN_ENV)


def backend_for(cuda: bool) -> str:
    """gloo for CPU tensors; NCCL for CUDA ones, with gloo kept for CPU-side collectives."""
    return "cpu:gloo,cuda:nccl" if cuda else "gloo"


def init_from_env() -> Comm:
    """A :class:`DistComm` when started by ``torchrun`` (even with one process), else a :class:`Comm`.

    The process group carries gloo for CPU tensors and, where a GPU is visible, NCCL for CUDA
    tensors, so the choice of ``train.device`` can come later (it may be read from a run folder).
    """
    if not launched_by_torchrun():
        return Comm()
    import torch.distributed as dist
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ["LOCAL_RANK"])
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(torch.cuda.is_available()))
    return DistComm(rank, world, local)

