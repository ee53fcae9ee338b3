"""tvm_freq: frequency-domain pruning of pointwise convolutions, compiled with Apache TVM.

Data flow: model (``models``) -> import (``frontend``) -> passes (``passes``) ->
kernels (``tvm_freq.kernels``) -> schedules (``tvm_freq.schedules``) -> build
(``pipeline``, ``tuning``, ``records``) -> run (``runtime``). See ``docs/architecture.md``.

The compiler names below load TVM on first use, so the PyTorch-only parts
(``tvm_freq.specnet``, ``tvm_freq.freq``, ``tvm_freq.train``) import and train on
machines without TVM.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pipeline import BuildReport, FreqOptions, Tuning, UntunedWarning, build
    from .runtime import BenchmarkResult, CompiledModel, load

__version__ = "0.1.0"

_LAZY = {
    "build": "pipeline",
    "Tuning": "pipeline",
    "BuildReport": "pipeline",
    "FreqOptions": "pipeline",
    "UntunedWarning": "pipeline",
    "load": "runtime",
    "CompiledModel": "runtime",
    "BenchmarkResult": "runtime",
}

__all__ = [
    "build",
    "load",
    "Tuning",
    "BuildReport",
    "FreqOptions",
    "UntunedWarning",
    "CompiledModel",
    "BenchmarkResult",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # PEP 562: import the TVM-backed modules only when one of their names is asked for.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tvm_freq' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
