"""Checkpoints of a training run: atomic save, RNG states, configuration compatibility.

A checkpoint is written atomically (:func:`tvm_freq._io.atomic_write`), so an
interruption leaves the previous one intact; it holds the RNG states
(:func:`rng_state`) and is only resumed with a compatible configuration
(:func:`check_compatible`: only the run-control fields may differ). It is a dict:
``version``, ``config`` (``asdict(TrainConfig)``), ``state``
(:meth:`~tvm_freq.train.state.RunState.to_dict`), ``results``, ``model`` (state dict of
the model itself, never of a DDP wrapper), ``optimizer`` (``None`` at phase boundaries)
and ``rng``; a data-parallel run writes the same (rank 0 does), so a checkpoint resumes
with any number of processes.
"""

from __future__ import annotations

import random
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_write
from .config import TrainConfig

__all__ = [
    "CKPT_VERSION",
    "RUN_CONTROL",
    "save_checkpoint",
    "read_checkpoint",
    "rng_state",
    "set_rng_state",
    "check_compatible",
]

# Fields that may change between an interrupted run and its resumption.
RUN_CONTROL = {"max_steps", "progress", "resume", "num_threads", "checkpoint_every", "device"}
CKPT_VERSION = 1


def save_checkpoint(obj: Any, path: Path) -> None:
    """``torch.save`` a checkpoint atomically (the previous one survives an interruption).

    Parameters
    ----------
    obj : Any
        Checkpoint contents.
    path : pathlib.Path
        Destination.
    """
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def read_checkpoint(
    path: Path, cfg: TrainConfig, map_location: torch.device | str
) -> dict[str, Any] | None:
    """Read the checkpoint a run with ``cfg`` resumes from, if any.

    Parameters
    ----------
    path : pathlib.Path
        Checkpoint file.
    cfg : TrainConfig
        Configuration of this run (``resume`` off: nothing is read).
    map_location : torch.device or str
        Where its tensors go.

    Returns
    -------
    dict or None
        The checkpoint; ``None`` when there is none to resume from.

    Raises
    ------
    ValueError
        For another checkpoint version or an incompatible configuration.
    """
    if not (cfg.resume and path.is_file()):
        return None
    # Our own file: it holds RNG states (numpy tuples), so not weights_only.
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if ckpt.get("version") != CKPT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint version {ckpt.get('version')}")
    check_compatible(ckpt["config"], cfg)
    return ckpt


def rng_state() -> dict[str, Any]:
    """The global RNG states of PyTorch, NumPy and Python.

    Returns
    -------
    dict
        ``torch``, ``numpy`` and ``python`` states.
    """
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned.

    Parameters
    ----------
    state : dict
        Saved RNG states.
    """
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def check_compatible(saved: dict[str, Any], cfg: TrainConfig) -> None:
    """Check that a checkpoint's configuration may be resumed with ``cfg``.

    Parameters
    ----------
    saved : dict
        The checkpoint's ``asdict(TrainConfig)``.
    cfg : TrainConfig
        The configuration of this run.

    Raises
    ------
    ValueError
        Naming the fields (other than :data:`RUN_CONTROL`) that differ.
    """
    now = asdict(cfg)
    # A field added after the checkpoint was written counts as its default.
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    diff = [k for k in now if k not in RUN_CONTROL and saved.get(k, defaults[k]) != now[k]]
    if diff:
        raise ValueError(
            f"checkpoint in {cfg.out_dir} was written with a different configuration "
            f"({', '.join(f'{k}: {saved.get(k)!r} -> {now[k]!r}' for k in diff)}); "
            "use another out_dir or resume=False"
        )
