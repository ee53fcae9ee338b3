"""Compatibility alias: the training-memory tools live in :mod:`tvm_freq.specnet.memory`.

``import tvm_freq.memory`` and ``python -m tvm_freq.memory`` keep working.
"""

from __future__ import annotations

from typing import Any

from .specnet import memory as _target

__all__ = list(_target.__all__)


def __getattr__(name: str) -> Any:
    # PEP 562: every public name of the real module, with no second list to keep in step.
    return getattr(_target, name)


if __name__ == "__main__":
    raise SystemExit(_target.main())
