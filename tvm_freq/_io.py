"""File helpers shared by the PyTorch side and the compiler: atomic writes, package data."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "shipped_records_root"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Write a file so that readers never see it half written.

    ``write`` writes a temporary file next to ``path`` (same directory, so the final
    rename stays on one file system), which then replaces ``path`` in one step. An
    interruption leaves the previous file intact, and a failed write removes the
    temporary file.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; missing parent directories are created.
    write : callable
        ``write(tmp_path)`` writes the whole content to ``tmp_path``.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def shipped_records_root() -> Path:
    """Return the directory of records (and cost models) shipped with the package.

    Found without importing ``tvm_freq.schedules``, which imports TVM: training reads the
    shipped cost models on machines without it.

    Returns
    -------
    pathlib.Path
        ``tvm_freq/schedules/records`` inside the installed package.
    """
    spec = importlib.util.find_spec("tvm_freq.schedules")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("tvm_freq.schedules is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "records"
