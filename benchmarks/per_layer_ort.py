"""Per-layer GMAC/s of tvm_freq's dense build and of ONNX Runtime, on the same ONNX file.

Both runtimes time every conv inside real runs of the whole network, their runs
interleaved: tvm_freq with
``CompiledModel.profile()``, ONNX Runtime with its own profiler
(``SessionOptions.enable_profiling``; its NCHWc graph fuses the ReLU6 clips and residual
adds into the convs, as tvm_freq's fused kernels do). Convs are matched in execution
order and their MACs come from the ONNX graph, so both columns divide the same work.
Writes ``docs/results/per-layer-<model>-t<threads>.{md,json}``::

    TVM_NUM_THREADS=1 python benchmarks/per_layer_ort.py
    python benchmarks/per_layer_ort.py --threads 2
    python benchmarks/per_layer_ort.py --model efficientnet-lite2-260   # bench_untuned's
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import tvm_freq
from tvm_freq import Tuning, UntunedWarning
from tvm_freq.frontend import fold_shape_arithmetic
from tvm_freq.models import bundled_onnx
from tvm_freq.runtime import median_profile

ROOT = Path(__file__).resolve().parents[1]
UNTUNED_MODELS = ("mobilenetv2-0.75-192", "efficientnet-lite2-260")


def conv_layers(path: Path) -> list[dict]:
    """Every Conv of the ONNX graph in graph order: kind, shapes, attributes and MACs.

    ``cin``, ``h``, ``w`` are the input's, ``hw`` the output's side; ``k``, ``stride``,
    ``pads``, ``dilations``, ``groups`` and ``auto_pad`` the node's attributes.
    """
    model = onnx.load(str(path))
    # Exporters of EfficientNet write "same" pads as shape arithmetic: fold it first, or
    # shape inference leaves the conv inputs' sizes unknown.
    dims = model.graph.input[0].type.tensor_type.shape.dim
    model = fold_shape_arithmetic(model, {model.graph.input[0].name: [d.dim_value for d in dims]})
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]}
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        group = int(attrs.get("group", 1))
        wshape = inits[node.input[1]]
        cout, cin_g, kh, kw = wshape
        y = shapes[node.output[0]]
        x = shapes[node.input[0]]
        macs = int(np.prod(y)) * cin_g * kh * kw
        if group > 1:
            kind = f"depthwise {kh}x{kw}"
        elif kh * kw == 1:
            kind = "pointwise expand" if cout > x[1] else "pointwise project"
        else:
            kind = f"conv {kh}x{kw}"
        out.append({"name": node.name, "kind": kind, "cin": x[1], "cout": cout,
                    "hw": y[2], "macs": macs, "h": x[2], "w": x[3], "k": [kh, kw],
                    "stride": list(attrs.get("strides", [1, 1])), "groups": group,
                    "pads": list(attrs.get("pads", [0] * 4)),
                    "dilations": list(attrs.get("dilations", [1, 1])),
                    "auto_pad": attrs.get("auto_pad", b"NOTSET").decode()})  # fmt: skip
    return out


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    """An ONNX Runtime session with its profiler on."""
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_conv_times(sess: ort.InferenceSession, runs: int) -> list[float]:
    """Median microseconds of each conv node over the session's runs but its first (a
    warm-up), in execution order."""
    events = json.loads(Path(sess.end_profiling()).read_text())
    convs = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
             and e["args"].get("op_name") in ("Conv", "FusedConv")]  # fmt: skip
    per_run = len(convs) // (runs + 1)
    if per_run * (runs + 1) != len(convs):
        raise RuntimeError(f"{len(convs)} conv events for {runs + 1} runs")
    return [statistics.median(convs[r * per_run + i]["dur"] for r in range(1, runs + 1))
            for i in range(per_run)]  # fmt: skip


def interleaved_conv_times(
    path: Path, x: np.ndarray, threads: int, runs: int
) -> tuple[list[float], list[float], str]:
    """Median microseconds of each conv, of the default dense build and of ONNX Runtime,
    their runs interleaved (a run of one, then of the other), so that drift on a shared
    machine hits both alike."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedWarning)
        model = tvm_freq.build(str(path), tuning=Tuning(), threads=threads)
    sess = ort_session(path, threads)
    feed = {sess.get_inputs()[0].name: x}
    sess.run(None, feed)  # warm-up, dropped by ort_conv_times
    profiles = []
    for _ in range(runs):
        profiles.append(model.profile(x))
        sess.run(None, feed)
    tvm_us = [k.median_us for k in median_profile(profiles) if "conv2d" in k.kernel]
    return tvm_us, ort_conv_times(sess, runs), model.target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mobilenetv2-224")
    ap.add_argument("--onnx", default=None,
                    help="an ONNX file with a static input shape instead of a zoo model "
                         "(--model then only names the output)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    start = time.perf_counter()
    if args.onnx:
        path = Path(args.onnx)
    elif args.model in UNTUNED_MODELS:
        # The models of bench_untuned.py, exported as it does (EfficientNet-Lite2 with its
        # real weights needs the efficientnet-lite packages).
        from bench_untuned import _models

        path = {name: p for name, p, _ in _models(Path(tempfile.mkdtemp()))}[args.model]
    else:
        path = bundled_onnx(args.model)
    layers = conv_layers(path)
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type
    shape = tuple(d.dim_value for d in dims.shape.dim)
    if not all(shape):
        raise SystemExit(f"{path}: the input shape {shape} is not static")
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    tvm_us, ort_us, target = interleaved_conv_times(path, x, args.threads, args.runs)
    if not len(layers) == len(tvm_us) == len(ort_us):
        raise RuntimeError(f"{len(layers)} convs in the graph, {len(tvm_us)} TVM conv kernels, "
                           f"{len(ort_us)} ORT conv nodes: cannot match them")  # fmt: skip
    for layer, t, o in zip(layers, tvm_us, ort_us, strict=True):
        layer["tvm_us"], layer["ort_us"] = t, o
    out = Path(args.out or ROOT / "docs" / "results" / f"per-layer-{args.model}-t{args.threads}")
    command = "python benchmarks/per_layer_ort.py " + shlex.join(argv or sys.argv[1:])
    doc = {"command": command.strip(), "target": target, "threads": args.threads,
           "onnxruntime": ort.__version__, "seconds": time.perf_counter() - start,
           "layers": layers}  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    text = markdown(doc, args.model)
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


def markdown(doc: dict, model: str) -> str:
    layers = doc["layers"]
    kinds: dict[str, list[dict]] = {}
    for layer in layers:
        kinds.setdefault(layer["kind"], []).append(layer)
    lines = [
        f"# Per layer: tvm_freq dense vs ONNX Runtime {doc['onnxruntime']}, {model}",
        "",
        f"Written by `{doc['command']}`: batch 1, {doc['threads']} thread(s), {doc['target']}; "
        "each conv timed inside real runs of the network (median of the runs), tvm_freq "
        "with `CompiledModel.profile()` (default schedules and records), ONNX Runtime with "
        "its own profiler. MACs from the ONNX graph, the same for both.",
        "",
        "| layer kind | convs | MMAC | tvm_freq us | tvm_freq GMAC/s | ORT us | ORT GMAC/s "
        "| tvm_freq / ORT time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, rows in kinds.items():
        macs = sum(r["macs"] for r in rows)
        t, o = sum(r["tvm_us"] for r in rows), sum(r["ort_us"] for r in rows)
        lines.append(f"| {kind} | {len(rows)} | {macs / 1e6:.1f} | {t:.0f} | {macs / t / 1e3:.1f} "
                     f"| {o:.0f} | {macs / o / 1e3:.1f} | {t / o:.2f} |")  # fmt: skip
    macs = sum(r["macs"] for r in layers)
    t, o = sum(r["tvm_us"] for r in layers), sum(r["ort_us"] for r in layers)
    lines.append(f"| **all convs** | {len(layers)} | {macs / 1e6:.1f} | {t:.0f} | "
                 f"{macs / t / 1e3:.1f} | {o:.0f} | {macs / o / 1e3:.1f} | "
                 f"{t / o:.2f} |")  # fmt: skip
    lines += ["", "| # | kind | Cin->Cout @ HxW | MMAC | tvm_freq GMAC/s | ORT GMAC/s |",
              "|---:|---|---|---:|---:|---:|"]  # fmt: skip
    for i, r in enumerate(layers):
        lines.append(f"| {i} | {r['kind']} | {r['cin']}->{r['cout']} @ {r['hw']} | "
                     f"{r['macs'] / 1e6:.1f} | {r['macs'] / r['tvm_us'] / 1e3:.1f} | "
                     f"{r['macs'] / r['ort_us'] / 1e3:.1f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
