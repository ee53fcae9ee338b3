"""Compatibility alias: the training-memory tools live in :mod:`tvm_freq.specnet.memory`.

``import tvm_freq.memory`` and ``python -m tvm_freq.memory`` keep working.
"""

from __future__ import annotations

from .specnet.memory import (
    DEFAULT_BETAS,
    MemoryRatio,
    SavedTensorCounter,
    SavedTensorStats,
    main,
    memory_ratios,
    peak_rss_step,
    saved_tensor_bytes,
)

__all__ = [
    "SavedTensorStats",
    "SavedTensorCounter",
    "saved_tensor_bytes",
    "peak_rss_step",
    "MemoryRatio",
    "memory_ratios",
    "DEFAULT_BETAS",
    "main",
]

if __name__ == "__main__":
    raise SystemExit(main())
