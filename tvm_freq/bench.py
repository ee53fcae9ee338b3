"""Wall-clock comparison of one model across runtimes, measured in one process and one run.

Used by ``tvm-freq bench`` and ``benchmarks/``. Every runtime gets the same input,
the same thread count and the same repeat/number scheme, and the table reports the
ratio to ONNX Runtime so that machine noise mostly cancels.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

__all__ = [
    "Timing", "format_table", "interleave", "plot_speed_vs_macs", "time_callable",
    "time_onnxruntime", "time_torch",
]  # fmt: skip


Runner = tuple[str, Callable[[], object]]
"""A runtime to time: its name for the table, and a function that runs the model once."""


@dataclass(frozen=True)
class Timing:
    """One runtime's latency in milliseconds."""

    runtime: str
    median_ms: float
    min_ms: float
    max_ms: float
    note: str = ""
    macs_removed: float | None = None  # whole-network fraction, for tvm_freq builds


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


def onnxruntime_runner(onnx_path: str | Path, x: np.ndarray, threads: int = 1) -> Runner:
    """ONNX Runtime's CPU provider with ``threads`` intra-op threads, as a timing runner.

    Parameters
    ----------
    onnx_path : str or pathlib.Path
        The model.
    x : numpy.ndarray
        Input.
    threads : int
        Intra-op threads (inter-op is 1).

    Returns
    -------
    Runner
        ``(name, run once)``.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return f"ONNX Runtime {ort.__version__}", lambda: sess.run(None, {name: x})


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
    return time_callable(*onnxruntime_runner(onnx_path, x, threads), **kw)


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


def interleave(
    measure: Sequence[Callable[[], Timing]], *, rounds: int = 5
) -> list[Timing]:
    """Run several measurements round by round, so that machine noise hits them all alike.

    Parameters
    ----------
    measure : sequence of callables
        Each takes one measurement (e.g. ``lambda: time_callable(...)``).
    rounds : int
        Rounds; every measurement runs once per round, in order.

    Returns
    -------
    list of Timing
        Per measurement: the median over rounds of its median, the lowest min and the
        highest max; names and notes from its first round.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    samples: list[list[Timing]] = [[] for _ in measure]
    for _ in range(rounds):
        for i, fn in enumerate(measure):
            samples[i].append(fn())
    return [
        replace(s[0], median_ms=statistics.median(t.median_ms for t in s),
                min_ms=min(t.min_ms for t in s), max_ms=max(t.max_ms for t in s))
        for s in samples
    ]  # fmt: skip


def format_table(
    timings: list[Timing], reference: str | None = None, baseline: str | None = None
) -> str:
    """Render timings as a Markdown table with ratios to a reference runtime.

    Parameters
    ----------
    timings : list of Timing
        Rows, in order.
    reference : str, optional
        Runtime name (prefix) the "vs" column divides by; default the first ONNX Runtime row.
    baseline : str, optional
        Runtime name (prefix) of the dense build: adds a "speed-up" column (its time over
        each row's) and a "MACs removed" column.

    Returns
    -------
    str
        Markdown table.
    """
    ref = next(
        (t for t in timings if t.runtime.startswith(reference or "ONNX Runtime")), timings[0]
    )
    base = next((t for t in timings if t.runtime.startswith(baseline)), None) if baseline else None
    head = "| runtime | "
    rule = "|---|"
    if base is not None:
        head += "MACs removed | "
        rule += "---:|"
    head += "median ms | min ms | max ms | vs " + ref.runtime.split(" ")[0] + " |"
    rule += "---:|---:|---:|---:|"
    if base is not None:
        head += " speed-up vs dense |"
        rule += "---:|"
    rows = [head, rule]
    for t in timings:
        note = f" ({t.note})" if t.note else ""
        row = f"| {t.runtime}{note} | "
        if base is not None:
            row += f"{t.macs_removed:.1%} | " if t.macs_removed is not None else "| "
        row += (f"{t.median_ms:.2f} | {t.min_ms:.2f} | {t.max_ms:.2f} | "
                f"{t.median_ms / ref.median_ms:.2f}x |")  # fmt: skip
        if base is not None:
            row += f" {base.median_ms / t.median_ms:.2f}x |"
        rows.append(row)
    return "\n".join(rows)


def plot_speed_vs_macs(timings: list[Timing], path: str | Path, title: str = "") -> Path:
    """Plot speed-up over ONNX Runtime against whole-network MACs removed.

    One point per tvm_freq build (rows with ``macs_removed``); ONNX Runtime and any other
    runtime are horizontal lines. Needs matplotlib (``pip install 'tvm-freq[plot]'``).

    Parameters
    ----------
    timings : list of Timing
        Rows of one measurement run.
    path : str or pathlib.Path
        PNG to write.
    title : str
        Figure title.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError(
            "--plot needs matplotlib: pip install 'tvm-freq[plot]'"
        ) from None
    ref = next((t for t in timings if t.runtime.startswith("ONNX Runtime")), None)
    if ref is None:
        raise ValueError("the plot compares with ONNX Runtime: time it too")
    builds = [t for t in timings if t.macs_removed is not None]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    xs = [100 * t.macs_removed for t in builds]
    ys = [ref.median_ms / t.median_ms for t in builds]
    ax.plot(xs, ys, "o-", color="C0", label="tvm_freq builds")
    for t, x, y in zip(builds, xs, ys, strict=True):
        ax.annotate(f"{t.runtime} ({t.median_ms:.1f} ms)", (x, y), textcoords="offset points",
                    xytext=(4, 6), fontsize=7)  # fmt: skip
    for i, t in enumerate(r for r in timings if r.macs_removed is None):
        ax.axhline(ref.median_ms / t.median_ms, color=f"C{i + 1}", ls="--",
                   label=f"{t.runtime} ({t.median_ms:.1f} ms)")  # fmt: skip
    ax.set_xlabel("whole-network MACs removed (%)")
    ax.set_ylabel("speed vs ONNX Runtime (x, higher is faster)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
