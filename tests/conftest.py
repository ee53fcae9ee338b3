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
