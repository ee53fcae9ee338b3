"""Shared fixtures: a per-session records directory, so tests never touch ~/.cache."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_records(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    old = os.environ.get("TVM_FREQ_RECORDS")
    os.environ["TVM_FREQ_RECORDS"] = str(root)
    yield root
    if old is None:
        os.environ.pop("TVM_FREQ_RECORDS", None)
    else:
        os.environ["TVM_FREQ_RECORDS"] = old


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # Small tensors on a 2-core machine: torch's spinning intra-op threads make them up to
    # 10x slower under load, so every test runs torch on one thread.
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def tensor_intrinsics():
    """TVM's tensor intrinsics registered the fast way, before a test makes a
    MetaSchedule ``TuneContext`` (which otherwise imports them: up to 2 minutes)."""
    from tvm_freq.tuning import load_tensor_intrinsics

    load_tensor_intrinsics()
