"""Data-parallel training under torchrun: 2 CPU processes (gloo) match 1 process.

The model has no batch norm and no dropout (see ``_ddp_worker.Tiny``): with them the
losses depend on how each global batch is split between the ranks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tvm_freq.train import distributed

WORKER = Path(__file__).with_name("_ddp_worker.py")


def _worker_module():
    spec = importlib.util.spec_from_file_location("_ddp_worker", WORKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"  # a rank that aborts prints its Python stacks
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={nproc}", str(WORKER), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_single_process_helpers_are_identities():
    assert distributed.current() == distributed.World(0, 1, 0)
    assert distributed.is_main()
    x, y = torch.arange(6.0), torch.arange(6)
    assert distributed.shard_batch(x, y) == (x, y)
    assert distributed.shard_weight(5, 5) == 1.0
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_ddp(model) is model and distributed.unwrap(model) is model
    assert distributed.on_main(lambda: 7) == 7
    torch.testing.assert_close(distributed.reduce_sum(x), x)


def test_two_processes_match_one_and_resume_from_rank0_checkpoint(data_dir, tmp_path):
    worker = _worker_module()
    ref = worker.train(data_dir, str(tmp_path / "one"), cut=None)
    assert ref["global_step"] == 9 and len(ref["losses"]) == 9

    # Two ranks of 8 images each; stopped after CUT steps, resumed by a second call.
    proc = _torchrun(2, data_dir, str(tmp_path / "two"), str(tmp_path / "result"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[:4000]
    ranks = [json.loads((tmp_path / f"result.rank{r}.json").read_text()) for r in (0, 1)]
    for rank, res in enumerate(ranks):
        assert (res["rank"], res["world"]) == (rank, 2)
        # Same global batches, gradients averaged by DDP: the losses of one process.
        torch.testing.assert_close(res["losses"], ref["losses"], rtol=1e-5, atol=1e-5)
        assert res["global_step"] == 9
        # Training released its DDP wrappers (and their hold on the process group)
        # before shutdown, without waiting for the cycle collector.
        assert res["live_ddp_wrappers"] == 0
        assert res["accuracy_pruned"] == pytest.approx(ref["accuracy_pruned"])
        assert res["macs"] == pytest.approx(ref["macs"])
    # Rank 0 alone wrote the checkpoints (and the files); rank 1 resumed from them.
    assert ranks[0]["saves"] > 0 and ranks[1]["saves"] == 0
    a = torch.load(tmp_path / "one" / "fcmask.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "fcmask.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert json.loads((tmp_path / "two" / "report.json").read_text())["global_step"] == 9
    assert not list((tmp_path / "two").glob(".*tmp*"))
