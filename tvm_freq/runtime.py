"""The compiled model users call: NumPy/torch in, NumPy out, benchmark, export and load.

Threads: TVM's runtime thread pool is process-wide. A :class:`CompiledModel` sizes it to
its ``threads`` when it runs (call, :meth:`~CompiledModel.benchmark`,
:meth:`~CompiledModel.profile`), and only when the pool has another size, so models
built for different thread counts can be used in one process.
:func:`set_num_threads` sets it explicitly. TVM never grows its pool past the size it
started with, so the first :func:`set_num_threads` (the first run of a model) starts it
with the CPUs this process may use when ``TVM_NUM_THREADS`` is unset; a pool started
smaller by other code makes :func:`set_num_threads` warn.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from .report import BuildReport
from .target import missing_host_features, resolve_target

__all__ = [
    "CompiledModel", "BenchmarkResult", "KernelTime", "load", "median_profile", "set_num_threads",
]  # fmt: skip

_META_SUFFIX = ".tvm_freq.json"
_META_VERSION = 1

#: Size the process-wide pool was last set to by :func:`set_num_threads` (None: never).
_pool_threads: int | None = None


def set_num_threads(threads: int) -> None:
    """Set the TVM runtime thread pool size for this process.

    Also sets ``TVM_NUM_THREADS``, which processes started later (e.g. MetaSchedule's
    measurement workers) inherit.

    Parameters
    ----------
    threads : int
        Number of worker threads (1 = single-thread, as the paper measures).
    """
    global _pool_threads
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    # TVM creates its pool on first use with TVM_NUM_THREADS workers, or, unset, half the
    # CPUs on x86 (it assumes two hyperthreads per core: one worker on a 2-core machine),
    # and never grows it. A pool this call creates starts with every CPU this process may
    # use, so that any later ``threads`` up to that count takes effect; the variable is
    # set to ``threads`` only after.
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ.setdefault("TVM_NUM_THREADS", str(cpus or 1))
    # affinity mode 0 = default; the pool is resized in place, up to the size it started
    # with.
    tvm_ffi.get_global_func("runtime.config_threadpool")(0, int(threads))
    os.environ["TVM_NUM_THREADS"] = str(threads)
    _pool_threads = int(threads)
    running = int(tvm_ffi.get_global_func("runtime.NumThreads")())
    if running < threads:
        warnings.warn(
            f"TVM's thread pool runs {running} thread(s), not {threads}: it was started "
            f"with fewer workers before tvm_freq set it. Set TVM_NUM_THREADS={threads} (or "
            "more) before the first TVM call.",
            RuntimeWarning,
            stacklevel=2,
        )


@dataclass(frozen=True)
class BenchmarkResult:
    """Latency statistics in milliseconds over ``repeat`` measurements."""

    median_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float
    repeat: int
    number: int

    def __str__(self) -> str:
        return (
            f"median {self.median_ms:.3f} ms (min {self.min_ms:.3f}, max {self.max_ms:.3f}; "
            f"{self.repeat}x{self.number} runs)"
        )


@dataclass(frozen=True)
class KernelTime:
    """Median time of one kernel call (see :meth:`CompiledModel.profile`)."""

    kernel: str
    median_us: float
    shapes: tuple[tuple[int, ...], ...] = ()  # of the tensor arguments, outputs last


def median_profile(rounds: Sequence[Sequence[KernelTime]]) -> list[KernelTime]:
    """Per kernel call, the median over several :meth:`CompiledModel.profile` rounds.

    Parameters
    ----------
    rounds : sequence of lists of KernelTime
        Profiles of the same model (same calls in the same order).

    Returns
    -------
    list of KernelTime
        One entry per kernel call.
    """
    if not rounds:
        raise ValueError("median_profile needs at least one profile")
    return [
        KernelTime(calls[0].kernel, statistics.median(c.median_us for c in calls), calls[0].shapes)
        for calls in zip(*rounds, strict=True)
    ]


@dataclass
class CompiledModel:
    """A model compiled by :func:`tvm_freq.build` (or loaded by :func:`tvm_freq.load`).

    Call it with NumPy arrays or torch tensors, one per model input; it returns a
    NumPy array (a tuple of them for several outputs). Running it (call, benchmark,
    profile) sizes the process-wide TVM thread pool to ``threads`` first.
    """

    executable: Any
    input_names: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    input_dtypes: tuple[str, ...]
    target: str
    threads: int = 1
    report: BuildReport | None = None

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        self._dev = tvm.cpu()
        self._vm = relax.VirtualMachine(self.executable, self._dev)
        self._host_checked = False

    def _ready_to_run(self) -> None:
        """Check that this CPU can run the code, and size the process-wide thread pool
        to this model's ``threads`` (if it is not)."""
        if not self._host_checked:
            # A model built for another CPU dies with SIGILL; say why instead.
            missing = missing_host_features(resolve_target(self.target))
            if missing:
                raise RuntimeError(
                    f"this model was compiled for {self.target}, which uses "
                    f"{', '.join(missing)}; this CPU lacks them, and running it would "
                    "crash the process. Build it for this CPU (target=None, the host) "
                    "to run it here; export_library still works for the other machine."
                )
            self._host_checked = True
        if _pool_threads != self.threads:
            set_num_threads(self.threads)

    def _random_inputs(self) -> tuple[np.ndarray, ...]:
        # Deterministic, so repeated benchmarks time the same data.
        rng = np.random.default_rng(0)
        return tuple(
            rng.standard_normal(s).astype(d)
            for s, d in zip(self.input_shapes, self.input_dtypes, strict=True)
        )

    def _convert(self, inputs: tuple[Any, ...]) -> list[tvm.runtime.Tensor]:
        if len(inputs) != len(self.input_shapes):
            raise ValueError(
                f"model takes {len(self.input_shapes)} input(s) {list(self.input_names)}, "
                f"got {len(inputs)}"
            )
        out = []
        for name, shape, dtype, x in zip(
            self.input_names, self.input_shapes, self.input_dtypes, inputs, strict=True
        ):
            if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
                x = x.detach().cpu().numpy()
            x = np.asarray(x)
            if tuple(x.shape) != tuple(shape):
                raise ValueError(
                    f"input {name!r}: expected shape {tuple(shape)}, got {tuple(x.shape)}"
                )
            if x.dtype != np.dtype(dtype):
                raise TypeError(f"input {name!r}: expected dtype {dtype}, got {x.dtype}")
            out.append(tvm.runtime.tensor(np.ascontiguousarray(x), self._dev))
        return out

    def __call__(self, *inputs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """Run the model.

        Parameters
        ----------
        *inputs : numpy.ndarray or torch.Tensor
            One array per model input, with exactly the compiled shape and dtype.

        Returns
        -------
        numpy.ndarray or tuple of numpy.ndarray
            The output(s).
        """
        self._ready_to_run()
        result = self._vm["main"](*self._convert(inputs))
        return _to_numpy(result)

    def benchmark(
        self, *inputs: Any, repeat: int = 30, number: int = 5, warmup: int = 3
    ) -> BenchmarkResult:
        """Time the model with TVM's ``time_evaluator``.

        Parameters
        ----------
        *inputs : numpy.ndarray or torch.Tensor, optional
            Inputs; deterministic random ones of the compiled shape when omitted.
        repeat : int
            Number of measurements; each averages ``number`` runs.
        number : int
            Runs per measurement.
        warmup : int
            Untimed runs first.

        Returns
        -------
        BenchmarkResult
            Median, min, max and mean latency in ms.
        """
        self._ready_to_run()
        args = self._convert(inputs or self._random_inputs())
        for _ in range(warmup):
            self._vm["main"](*args)
        timer = self._vm.time_evaluator("main", self._dev, number=number, repeat=repeat)
        ms = [t * 1e3 for t in timer(*args).results]
        return BenchmarkResult(
            statistics.median(ms), min(ms), max(ms), statistics.fmean(ms), repeat, number
        )

    def profile(self, *inputs: Any, repeat: int = 20, warmup: int = 3) -> list[KernelTime]:
        """Time every kernel call inside real runs of the model: where the time goes.

        The VM's instrumentation hook stamps the clock right before and right after each
        kernel call, over ``repeat`` runs, so every kernel sees the caches as the model
        leaves them (weights cold, activations from the previous kernel). Each stamp
        pair also holds a few microseconds of hook overhead, so the sum is a little more
        than :meth:`benchmark`'s median.

        Parameters
        ----------
        *inputs : numpy.ndarray or torch.Tensor, optional
            Inputs; deterministic random ones when omitted.
        repeat : int
            Timed runs; each call's median is reported.
        warmup : int
            Untimed runs first.

        Returns
        -------
        list of KernelTime
            One entry per kernel call, in execution order.
        """
        self._ready_to_run()
        args = self._convert(inputs or self._random_inputs())
        runs: list[list[tuple[str, float, tuple]]] = []
        start: list[float] = [0.0]

        def stamp(_func: Any, symbol: str, before: bool, _ret: Any, *call_args: Any) -> int:
            now = time.perf_counter()
            if symbol.startswith("vm.builtin"):
                return 0  # VMInstrumentReturnKind.NoOp
            if before:
                start[0] = now
            else:
                shapes = tuple(tuple(int(d) for d in a.shape) for a in call_args
                               if isinstance(a, tvm.runtime.Tensor))  # fmt: skip
                runs[-1].append((symbol, (now - start[0]) * 1e6, shapes))
            return 0

        for _ in range(warmup):
            self._vm["main"](*args)
        self._vm.set_instrument(stamp)
        try:
            for _ in range(repeat):
                runs.append([])
                self._vm["main"](*args)
        finally:
            self._vm.set_instrument(None)  # no hook overhead in later runs
        return [
            KernelTime(calls[0][0], statistics.median(c[1] for c in calls), calls[0][2])
            for calls in zip(*runs, strict=True)
        ]

    def export_library(self, path: str | os.PathLike) -> Path:
        """Write the compiled model to a shared library plus a small JSON sidecar.

        Parameters
        ----------
        path : str or os.PathLike
            Library path, e.g. ``model.so``. ``<path>.tvm_freq.json`` holds the signature.

        Returns
        -------
        pathlib.Path
            The library path.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.executable.export_library(str(path))
        meta = {
            "version": _META_VERSION,
            "input_names": list(self.input_names),
            "input_shapes": [list(s) for s in self.input_shapes],
            "input_dtypes": list(self.input_dtypes),
            "target": self.target,
            "threads": self.threads,
            "report": self.report.to_json() if self.report is not None else None,
        }
        tmp = path.with_name(path.name + _META_SUFFIX + ".tmp")
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, path.with_name(path.name + _META_SUFFIX))
        return path


def _to_numpy(value: Any) -> np.ndarray | tuple[np.ndarray, ...]:
    if isinstance(value, tvm.runtime.Tensor):
        return value.numpy()
    items = tuple(_to_numpy(v) for v in value)
    return items[0] if len(items) == 1 else items


def load(path: str | os.PathLike, threads: int | None = None) -> CompiledModel:
    """Load a model written by :meth:`CompiledModel.export_library`, without recompiling.

    Parameters
    ----------
    path : str or os.PathLike
        The library path.
    threads : int, optional
        Runtime threads; defaults to what the model was built for.

    Returns
    -------
    CompiledModel
        The model, ready to call.
    """
    path = Path(path)
    meta_path = path.with_name(path.name + _META_SUFFIX)
    if not path.exists():
        raise FileNotFoundError(f"compiled model not found: {path}")
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path} is missing: export with CompiledModel.export_library")
    meta = json.loads(meta_path.read_text())
    if meta.get("version") != _META_VERSION:
        raise ValueError(f"{meta_path}: unsupported version {meta.get('version')}")
    executable = tvm.runtime.load_module(str(path))
    report = meta.get("report")
    return CompiledModel(
        executable=executable,
        input_names=tuple(meta["input_names"]),
        input_shapes=tuple(tuple(s) for s in meta["input_shapes"]),
        input_dtypes=tuple(meta["input_dtypes"]),
        target=meta["target"],
        threads=threads or int(meta.get("threads", 1)),
        report=BuildReport.from_json(report) if report is not None else None,
    )
