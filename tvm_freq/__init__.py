"""tvm_freq: frequency-domain pruning of pointwise convolutions, compiled with Apache TVM.

Data flow: model (``models``) -> import (``frontend``) -> passes (``passes``) ->
kernels (``tvm_freq.kernels``) -> schedules (``tvm_freq.schedules``) -> build
(``pipeline``) -> run (``runtime``).
"""

from .pipeline import BuildReport, Tuning, UntunedWarning, build
from .runtime import BenchmarkResult, CompiledModel, load

__version__ = "0.1.0"

__all__ = [
    "build",
    "load",
    "Tuning",
    "BuildReport",
    "UntunedWarning",
    "CompiledModel",
    "BenchmarkResult",
    "__version__",
]
