"""One rank of the data-parallel training test (run by torchrun, or imported by the test).

``python -m torch.distributed.run --standalone --nproc_per_node=2 _ddp_worker.py DATA OUT
RESULT`` trains :class:`Tiny` with ``run_training`` in two calls: the first stops after
``CUT`` steps with a checkpoint, the second resumes from it and finishes. Each rank
writes ``RESULT.rank<N>.json``: per-step losses, how many checkpoints it wrote, the
final report's accuracies and MACs, and how many DDP wrappers outlived training.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from test_train import _cfg  # the tiny run of the single-process tests (same folder)
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import tvm_freq.train.loop as loop
from tvm_freq.train import TrainConfig, distributed, run_training

CUT = 4  # steps of the first call: inside the mask phase


class Tiny(nn.Module):
    """Conv stem, two pointwise convs (wrapped for FCMasks), linear head; no BN, no dropout.

    Batch norm in training mode and dropout depend on how the batch is split between
    ranks; without them one process and several give the same losses.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 3, stride=2, padding=1)
        self.pw1 = nn.Conv2d(8, 16, 1)
        self.pw2 = nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.pw1(F.relu(self.stem(x))))
        return self.head(F.relu(self.pw2(x)).mean((2, 3)))


def tiny_model(name: str, *, seed: int | None = 0, **kw: Any) -> nn.Module:
    """Stands in for :func:`tvm_freq.models.get_model` (same seeding, same eval mode)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed or 0)
        return Tiny(kw.get("in_channels", 3), kw.get("num_classes", 10)).eval()


def config(data_dir: str, out_dir: str, **kw: Any) -> TrainConfig:
    """Every phase of learn-refine: 3 train, 3 mask and 3 refine steps of 16 images."""
    return _cfg(data_dir, out_dir, **({"lr": 0.1, "augment": True} | kw))


def train(data_dir: str, out_dir: str, cut: int | None) -> dict[str, Any]:
    """Run to the end (or stop after ``cut`` steps, then resume); losses, saves, report."""
    losses: list[float] = []
    saves = 0
    save, get_model = loop.save_checkpoint, loop.get_model

    def counting_save(obj: Any, path: Path) -> None:
        nonlocal saves
        saves += 1
        save(obj, path)

    def on_step(info: dict[str, Any]) -> None:
        losses.append(info["loss"])

    loop.get_model, loop.save_checkpoint = tiny_model, counting_save
    try:
        if cut is not None:
            first = run_training(config(data_dir, out_dir, max_steps=cut), on_step)
            assert first["interrupted"] and first["global_step"] == cut
        report = run_training(config(data_dir, out_dir), on_step)
    finally:
        loop.get_model, loop.save_checkpoint = get_model, save
    keys = ("accuracy_unpruned", "accuracy_pruned", "global_step", "macs")
    return {"losses": losses, "saves": saves} | {k: report[k] for k in keys}


def live_ddp_wrappers() -> int:
    """DDP wrappers still alive, collected or not (each holds the process group)."""
    return sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())


def main() -> None:
    data_dir, out_dir, result = sys.argv[1:4]
    world = distributed.init_from_env()
    # Without the cycle collector, a wrapper that only a reference cycle (or a kept
    # traceback) frees would still be alive when training returns.
    gc.disable()
    out = train(data_dir, out_dir, CUT) | {"rank": world.rank, "world": world.size}
    out["live_ddp_wrappers"] = live_ddp_wrappers()
    gc.enable()
    Path(f"{result}.rank{world.rank}.json").write_text(json.dumps(out))
    distributed.shutdown()


if __name__ == "__main__":
    main()
