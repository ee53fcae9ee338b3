"""Shipped records against the default schedules alone, and ONNX Runtime, in one run.

Dense MobileNetV2-224 (the bundled ONNX file), batch 1: built once with the shipped
records (``Tuning()``, the default) and once with no records at all (every kernel on
its default schedule, or plain loops where none fits), then timed with ONNX Runtime in
interleaved rounds. Writes ``docs/results/records-vs-defaults.{md,json}``::

    TVM_NUM_THREADS=1 python benchmarks/bench_records.py
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from tvm_freq import Tuning, UntunedWarning, build
from tvm_freq.bench import Timing, format_table, interleave, onnxruntime_runner, time_callable
from tvm_freq.models import bundled_onnx

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "records-vs-defaults"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mobilenetv2-224")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    start = time.perf_counter()
    path = bundled_onnx(args.model)
    with tempfile.TemporaryDirectory() as empty, warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedWarning)
        shipped = build(str(path), threads=args.threads, tuning=Tuning(records=empty))
        defaults = build(str(path), threads=args.threads,
                         tuning=Tuning(records=empty, use_shipped=False))  # fmt: skip
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype("float32")
    if not np.allclose(shipped(x), defaults(x), rtol=1e-4, atol=1e-4):
        raise SystemExit("the two builds disagree: a record computes something else")

    def runner(model, label: str, note: str):
        def once() -> Timing:
            r = model.benchmark(x, repeat=args.repeat)
            return Timing(label, r.median_ms, r.min_ms, r.max_ms, note)

        return once

    rep = shipped.report
    ort = onnxruntime_runner(path, x, args.threads)
    rows = interleave([
        runner(shipped, "shipped records",
               f"{rep.tasks_with_records} of {rep.num_tasks} kernels from records"),
        runner(defaults, "default schedules", f"{len(defaults.report.default_scheduled)} of "
               f"{defaults.report.num_tasks} kernels on a default schedule"),
        lambda: time_callable(*ort, repeat=args.repeat),
    ], rounds=args.rounds)  # fmt: skip
    table = format_table(rows)
    print(table)
    cmd = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    payload = {
        "command": cmd, "model": args.model, "threads": args.threads,
        "timings": [r.__dict__ for r in rows],
        "shipped_vs_defaults": rows[0].median_ms / rows[1].median_ms,
        "shipped_vs_onnxruntime": rows[0].median_ms / rows[2].median_ms,
        "defaults_vs_onnxruntime": rows[1].median_ms / rows[2].median_ms,
        "wall_time_s": time.perf_counter() - start,
        "environment": {"python": platform.python_version(), "platform": platform.platform()},
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    records_readme = Path(__file__).resolve().parents[1] / "schedules" / "records" / "README.md"
    md = (f"# Shipped records against default schedules: {args.model}\n\n"
          f"Batch 1, {args.threads} thread(s), median of {args.rounds} interleaved rounds, "
          f"measured in one run. The records: {records_readme.name} in `schedules/records/`."
          f"\n\n{table}\n\nShipped records / default schedules: "
          f"{payload['shipped_vs_defaults']:.3f}; against ONNX Runtime: shipped "
          f"{payload['shipped_vs_onnxruntime']:.2f}x, defaults "
          f"{payload['defaults_vs_onnxruntime']:.2f}x its time.\n\n"
          f"Command:\n\n```\n{cmd}\n```\n")  # fmt: skip
    out.with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
