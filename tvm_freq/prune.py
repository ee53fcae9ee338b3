"""Compatibility alias: profiling-based pruning lives in :mod:`tvm_freq.freq.prune`."""

from __future__ import annotations

from typing import Any

from .freq import prune as _target

__all__ = list(_target.__all__)


def __getattr__(name: str) -> Any:
    # PEP 562: every public name of the real module, with no second list to keep in step.
    return getattr(_target, name)
