"""Wall-clock comparison of one model across runtimes, measured in one process and one run.

Used by ``tvm-freq bench`` and ``benchmarks/``. Every runtime gets the same input,
the same thread count and the same repeat/number scheme, and the table reports the
ratio to ONNX Runtime so that machine noise mostly cancels.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Timing", "time_callable", "time_onnxruntime", "time_torch", "format_table"]


@dataclass(frozen=True)
class Timing:
    """One runtime's latency in milliseconds."""

    runtime: str
    median_ms: float
    min_ms: float
    max_ms: float
    note: str = ""


def time_callable(
    name: str, fn: Callable[[], object], *, repeat: int = 30, number: int = 5, warmup: int = 3
) -> Timing:
    """Time ``fn`` as ``repeat`` measurements of ``number`` calls each.

    Parameters
    ----------
    name : str
        Runtime name for the table.
    fn : callable
        Runs the model once.
    repeat, number, warmup : int
        Measurement scheme (same as TVM's ``time_evaluator``).

    Returns
    -------
    Timing
        Median/min/max per-call latency.
    """
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        ms.append((time.perf_counter() - start) * 1e3 / number)
    return Timing(name, statistics.median(ms), min(ms), max(ms))


def time_onnxruntime(
    onnx_path: str | Path, x: np.ndarray, threads: int = 1, **kw: int
) -> Timing:
    """Time ONNX Runtime's CPU provider with ``threads`` intra-op threads.

    Parameters
    ----------
    onnx_path : str or pathlib.Path
        The model.
    x : numpy.ndarray
        Input.
    threads : int
        Intra-op threads (inter-op is 1).
    **kw : int
        ``repeat``, ``number``, ``warmup``.

    Returns
    -------
    Timing
        ONNX Runtime latency.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return time_callable(f"ONNX Runtime {ort.__version__}", lambda: sess.run(None, {name: x}), **kw)


def time_torch(model, x: np.ndarray, threads: int = 1, **kw: int) -> Timing:
    """Time PyTorch eager inference with ``threads`` threads.

    Parameters
    ----------
    model : torch.nn.Module
        The model (put in eval mode).
    x : numpy.ndarray
        Input.
    threads : int
        ``torch.set_num_threads`` value during the measurement.
    **kw : int
        ``repeat``, ``number``, ``warmup``.

    Returns
    -------
    Timing
        PyTorch latency.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        xt = torch.from_numpy(x)
        model.eval()
        with torch.inference_mode():
            return time_callable(f"PyTorch {torch.__version__} eager", lambda: model(xt), **kw)
    finally:
        torch.set_num_threads(old)


def format_table(timings: list[Timing], reference: str | None = None) -> str:
    """Render timings as a Markdown table with ratios to a reference runtime.

    Parameters
    ----------
    timings : list of Timing
        Rows, in order.
    reference : str, optional
        Runtime name (prefix) the ratio column divides by; default the first ONNX Runtime row.

    Returns
    -------
    str
        Markdown table.
    """
    ref = next(
        (t for t in timings if t.runtime.startswith(reference or "ONNX Runtime")), timings[0]
    )
    rows = [
        "| runtime | median ms | min ms | max ms | vs " + ref.runtime.split(" ")[0] + " |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in timings:
        note = f" ({t.note})" if t.note else ""
        rows.append(
            f"| {t.runtime}{note} | {t.median_ms:.2f} | {t.min_ms:.2f} | {t.max_ms:.2f} | "
            f"{t.median_ms / ref.median_ms:.2f}x |"
        )
    return "\n".join(rows)
