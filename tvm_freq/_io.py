"""File helpers shared by the PyTorch side and the mask file: atomic writes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write"]


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
