"""Data-parallel training under ``torchrun``: process group, DDP, global-batch shards.

A run started by ``torchrun`` (``python -m torch.distributed.run``) finds ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous (``MASTER_ADDR``/``MASTER_PORT``) in
its environment; :func:`init_from_env` joins that process group (``gloo``, which runs
on the CPU). Without those variables, or with ``WORLD_SIZE=1``, every helper here
falls back to the single-process behaviour, so code written with them runs unchanged
either way. The parallelism itself is PyTorch's:
:class:`~torch.nn.parallel.DistributedDataParallel` averages the gradients.

Each rank takes a contiguous share of the *global* batch (:func:`shard_batch`), so
``N`` ranks with ``B/N`` examples each take the same optimizer steps as one process
with ``B``: DDP averages the ranks' gradients, and :func:`shard_weight` corrects the
average where the shares differ in size (a global batch that ``N`` does not divide).
Equal to one process up to float rounding where the model's forward is per-example:
batch-norm layers in training mode normalise each rank's share with its own
statistics (:class:`~torch.nn.SyncBatchNorm` does not run on the CPU), and dropout
draws each rank's masks from that rank's generator.

API
---
:class:`World`
    ``rank``, ``size``, ``local_rank``; ``is_main`` (rank 0), ``distributed``.
:func:`init_from_env` ``(backend="gloo", timeout=None) -> World``
    Join torchrun's process group once (later calls return the same world).
:func:`current` ``() -> World``
    The world of this process: the process group's, else the environment's.
:func:`is_main` ``() -> bool``
    Rank 0, the process that writes files, logs and progress bars.
:func:`wrap_ddp` ``(model, **kwargs) -> nn.Module`` / :func:`unwrap` ``(model)``
    DDP around a model when distributed (the model itself otherwise); wrap after
    choosing which parameters train, and again when that choice or the model's
    structure changes; drop the old wrapper first.
:func:`shard_batch` ``(*tensors) -> tuple``
    This rank's contiguous share of a global batch.
:func:`shard_weight` ``(n_local, n_global) -> float``
    Factor for a share's mean loss so that DDP's average is the global batch's mean.
:func:`reduce_sum` ``(tensor) -> Tensor``
    Sum over the ranks (a copy), e.g. for the global batch's loss.
:func:`on_main` ``(fn) -> T``
    Run ``fn`` on rank 0 only, hand its result (or its exception) to every rank;
    also a barrier. Writing a checkpoint: ``on_main(lambda: save(...))``; reading
    one so that every rank resumes from what rank 0 read: ``on_main(load)``.
:func:`barrier` ``()``, :func:`shutdown` ``()``
    Wait for every rank; wait, then leave the process group (at the normal end of the
    program, on every rank; not after an error).

Example (a training step)::

    world = init_from_env()
    net = wrap_ddp(model)
    x, y = shard_batch(x_global, y_global)
    loss = F.cross_entropy(net(x), y) * shard_weight(len(y), len(y_global))
    loss.backward(); opt.step()
    on_main(lambda: save_checkpoint(model.state_dict(), path))
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "World",
    "init_from_env",
    "current",
    "is_main",
    "wrap_ddp",
    "unwrap",
    "shard_batch",
    "shard_weight",
    "reduce_sum",
    "on_main",
    "barrier",
    "shutdown",
]

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """The processes of a data-parallel run, as seen from one of them.

    Parameters
    ----------
    rank : int
        This process, ``0 <= rank < size``.
    size : int
        Number of processes.
    local_rank : int
        This process among those on its machine.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether there is more than one process."""
        return self.size > 1


def _env_world() -> World:
    def get(name: str, default: int) -> int:
        text = os.environ.get(name, "")
        try:
            return int(text) if text else default
        except ValueError:
            raise ValueError(f"${name} must be an integer, got {text!r}") from None

    return World(get("RANK", 0), get("WORLD_SIZE", 1), get("LOCAL_RANK", 0))


def current() -> World:
    """The world of this process.

    Returns
    -------
    World
        From the process group when one is initialised, else from torchrun's
        environment variables (``World()`` without them).
    """
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), _env_world().local_rank)
    return _env_world()


def init_from_env(backend: str = "gloo", timeout: timedelta | None = None) -> World:
    """Join the process group that torchrun's environment describes.

    Does nothing in a single process (no ``WORLD_SIZE``, or 1) or when a process group
    is already initialised, so it may be called more than once.

    Parameters
    ----------
    backend : str
        ``torch.distributed`` backend; ``gloo`` runs on the CPU.
    timeout : datetime.timedelta, optional
        How long collectives wait for the other ranks (PyTorch's default otherwise).

    Returns
    -------
    World
        This process's rank and the number of processes.

    Raises
    ------
    RuntimeError
        When the environment asks for several processes and ``torch.distributed`` is
        not available in this build of PyTorch.
    """
    world = _env_world()
    if world.distributed and not (dist.is_available() and dist.is_initialized()):
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available")
        kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        dist.init_process_group(backend, init_method="env://", **kwargs)
    return current()


def is_main() -> bool:
    """Whether this process is rank 0 (always true in a single process).

    Returns
    -------
    bool
        True on the process that writes checkpoints, files, logs and progress bars.
    """
    return current().is_main


def wrap_ddp(model: nn.Module, **kwargs: Any) -> nn.Module:
    """Wrap a model in DistributedDataParallel when distributed.

    DDP registers the parameters that require gradients when it is built and
    broadcasts rank 0's parameters and buffers to every rank. Build it after setting
    ``requires_grad``, and build a new one (dropping the old) when that or the model's
    structure changes.

    Parameters
    ----------
    model : torch.nn.Module
        Model, on its device.
    **kwargs
        Passed to :class:`~torch.nn.parallel.DistributedDataParallel`.

    Returns
    -------
    torch.nn.Module
        The DDP wrapper, or ``model`` itself in a single process.
    """
    if not current().distributed:
        return model
    return DistributedDataParallel(model, **kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (``model`` itself when it is not one).

    Parameters
    ----------
    model : torch.nn.Module
        What :func:`wrap_ddp` returned, or a plain model.

    Returns
    -------
    torch.nn.Module
        The wrapped model.
    """
    return model.module if isinstance(model, DistributedDataParallel) else model


def shard_batch(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """This rank's contiguous share of a global batch.

    The shares of ranks ``0..N-1`` are consecutive and differ in size by one at most
    (:func:`torch.tensor_split`); a global batch smaller than ``N`` leaves some ranks
    empty, which training cannot handle, so keep the batch size at least ``N``.

    Parameters
    ----------
    *tensors : torch.Tensor
        Tensors whose first dimension is the batch (e.g. inputs and labels).

    Returns
    -------
    tuple of torch.Tensor
        This rank's share of each (the tensors themselves in a single process).
    """
    world = current()
    if not world.distributed:
        return tensors
    return tuple(torch.tensor_split(t, world.size)[world.rank] for t in tensors)


def shard_weight(n_local: int, n_global: int) -> float:
    """Factor for a share's *mean* loss so that DDP's gradient average is the global mean.

    DDP divides the sum of the ranks' gradients by the number of ranks; with shares of
    unequal size that is not the mean over the global batch unless each rank's mean
    loss is weighted by ``n_local * size / n_global``. Equal shares (and a single
    process) give exactly 1.

    Parameters
    ----------
    n_local : int
        Examples in this rank's share.
    n_global : int
        Examples in the global batch.

    Returns
    -------
    float
        The weight.
    """
    return n_local * current().size / n_global


def reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of a tensor over all ranks.

    Parameters
    ----------
    tensor : torch.Tensor
        This rank's value (not modified; CPU for ``gloo``).

    Returns
    -------
    torch.Tensor
        A new tensor with the sum (a copy of ``tensor`` in a single process).
    """
    out = tensor.detach().clone()
    if current().distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and give every rank its result.

    A collective call: every rank must make it, and none returns before rank 0's
    ``fn`` has. When ``fn`` raises, every rank raises (rank 0 the exception itself,
    the others a copy), so no rank is left waiting for the next collective.

    Parameters
    ----------
    fn : callable
        No arguments; its result must pickle when distributed.

    Returns
    -------
    Any
        What ``fn`` returned on rank 0.
    """
    world = current()
    if not world.distributed:
        return fn()
    box: list[Any] = [None]
    error: BaseException | None = None
    if world.is_main:
        try:
            box[0] = ("ok", fn())
        except Exception as err:  # handed to the other ranks, then raised here too
            error = err
            box[0] = ("error", _picklable(err))
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if error is not None:
        raise error
    if kind == "error":
        raise value
    return value


def _picklable(err: Exception) -> Exception:
    import pickle

    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return RuntimeError(f"on rank 0: {type(err).__name__}: {err}")


def barrier() -> None:
    """Wait until every rank gets here (nothing in a single process)."""
    if current().distributed:
        dist.barrier()


def shutdown() -> None:
    """Wait for every rank, then leave the process group (if one was initialised).

    Call it once, on every rank, at the normal end of the program: no rank then tears
    down its connections while another still uses them. After an error, exit instead
    (torchrun stops the other ranks); the barrier would wait for ranks that never come.
    """
    if dist.is_available() and dist.is_initialized():
        # A DDP wrapper that is garbage but not yet collected (in a reference cycle, or
        # held by a traceback) keeps the process group alive past destroy_process_group;
        # gloo's worker threads would then be torn down during interpreter finalisation,
        # which can abort the process. Collect it while the interpreter is whole.
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
