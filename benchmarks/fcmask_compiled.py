"""The trained Fashion-MNIST FCMask model, compiled and timed: accuracy kept, speed measured.

Takes the output folder of ``benchmarks/train_fcmask.py`` (its ``report.json``, the dense
weights ``fcmask.pt`` and the mask file ``fcmask.masks.json``) and, in one run:

* rebuilds exactly that model and compiles it with ``tvm_freq.build(model, masks=...)``
  (the PyTorch path), and without masks (the dense build);
* checks that the compiled frequency build's test accuracy equals the PyTorch accuracy
  of the masked model (and counts the test images where their predictions differ);
* times the dense build, the frequency build and ONNX Runtime on the dense model,
  batch 1, one thread, in interleaved rounds, at the training resolution (32x32).

Writes ``docs/results/fcmask-compiled.{json,md}``::

    TVM_NUM_THREADS=1 python benchmarks/fcmask_compiled.py --run-dir runs/fcmask-reduced \\
        --data-dir /path/to/data
"""

from __future__ import annotations

import argparse
import copy
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

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "fcmask-compiled"


def _model(cfg: dict, weights: Path) -> torch.nn.Module:
    from tvm_freq.models import get_model

    kw = {"in_channels": cfg["channels"], "num_classes": 10}
    if cfg["model"].startswith("mobilenetv2"):
        kw["width_mult"] = cfg["width"]
    model = get_model(cfg["model"], seed=cfg["seed"], **kw)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", required=True, help="out dir of benchmarks/train_fcmask.py")
    ap.add_argument("--data-dir", default=None, help="Fashion-MNIST (default: TVM_FREQ_DATA)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--default-rule", action="store_true",
                    help="default MAC rule instead of banding every masked layer (shows "
                         "why a model trained under its masks needs force)")  # fmt: skip
    args = ap.parse_args(argv)

    from tvm_freq import Tuning, UntunedWarning, build
    from tvm_freq.bench import Timing, format_table, interleave, onnxruntime_runner, time_callable
    from tvm_freq.data import load_dataset
    from tvm_freq.freq.export import apply_masks
    from tvm_freq.masks import load_masks
    from tvm_freq.models import export_onnx
    from tvm_freq.train import evaluate

    start = time.perf_counter()
    torch.set_num_threads(1)
    run = Path(args.run_dir)
    report = json.loads((run / "report.json").read_text())
    cfg = report["config"]
    if report.get("interrupted"):
        raise SystemExit(f"{run} holds an interrupted run: finish it first")
    dense_model = _model(cfg, run / "fcmask.pt")
    maskfile = load_masks(run / "fcmask.masks.json")
    test = load_dataset(cfg["dataset"], "test", args.data_dir or cfg["data_dir"],
                        limit=cfg["test_limit"], channels=cfg["channels"])  # fmt: skip
    x_all, y_all = test.tensors
    example = x_all[:1]
    masked = apply_masks(copy.deepcopy(dense_model), maskfile, example).eval()
    acc_torch = evaluate(masked, test)
    with torch.no_grad():
        pred_torch = masked(x_all).argmax(1).numpy()

    records = Tuning(records=Path(tempfile.mkdtemp()) / "records", use_shipped=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedWarning)
        # force: a model trained under its masks (batch norm statistics included) is that
        # function only with every masked layer banded; the default MAC rule would compute
        # unprofitable masked layers dense, a different function.
        freq = build(dense_model, example_inputs=(example,), masks=maskfile, tuning=records,
                     freq_options={"force": not args.default_rule})  # fmt: skip
        dense = build(dense_model, example_inputs=(example,), tuning=records)
    rewritten = [d for d in freq.report.layers if d.rewritten]
    pred_tvm = np.array([int(np.argmax(freq(x_all[i : i + 1].numpy()))) for i in range(len(x_all))])
    acc_tvm = 100.0 * float((pred_tvm == y_all.numpy()).mean())
    differ = int((pred_tvm != pred_torch).sum())

    x = example.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(dense_model, Path(tmp) / "dense.onnx", tuple(x.shape))
        ort = onnxruntime_runner(onnx_path, x, 1)

        def runner(name, model, note=""):
            def once() -> Timing:
                r = model.benchmark(x, repeat=args.repeat)
                return Timing(name, r.median_ms, r.min_ms, r.max_ms, note)

            return once

        rows = interleave(
            [
                runner("tvm_freq dense", dense),
                runner("tvm_freq freq", freq, f"{len(rewritten)} layers banded"),
                lambda: time_callable(ort[0], ort[1], repeat=args.repeat),
            ],
            rounds=args.rounds,
        )
    t = {r.runtime: r.median_ms for r in rows}
    ort_ms = rows[2].median_ms
    result = {
        "accuracy_report": report.get("accuracy_pruned"),
        "accuracy_torch": acc_torch,
        "accuracy_compiled": acc_tvm,
        "predictions_differing": differ,
        "test_images": len(y_all),
        "masked_layers": len(maskfile.layers),
        "rewritten_layers": len(rewritten),
        "timings_ms": t,
        "freq_vs_dense": t["tvm_freq dense"] / t["tvm_freq freq"],
        "freq_vs_onnxruntime": ort_ms / t["tvm_freq freq"],
        "pointwise_reduction": report.get("macs", {}).get("pointwise_reduction"),
    }
    cmd = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    payload = {"command": cmd, "result": result, "wall_time_s": time.perf_counter() - start,
               "environment": {"python": platform.python_version(),
                               "platform": platform.platform(), "threads": 1}}  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    table = format_table(rows)
    md = (
        "# The trained Fashion-MNIST FCMask model, compiled\n\n"
        f"MobileNetV2 width {cfg['width']} at 32x32, trained by `benchmarks/train_fcmask.py` "
        f"({cfg['mask_epochs']} mask epochs, target {cfg['target_reduction']}x pointwise MACs). "
        f"Compiled with `tvm_freq.build(model, masks=..., freq_options={{'force': "
        f"{not args.default_rule}}})` (PyTorch path, untuned: default schedules): "
        f"{len(rewritten)} of {len(maskfile.layers)} masked layers banded"
        + (" (the default MAC rule).\n\n" if args.default_rule else ", as in training.\n\n")
        + "| top-1 on the test set | % |\n|---|---:|\n"
        f"| PyTorch, masked model | {acc_torch:.2f} |\n"
        f"| compiled frequency build | {acc_tvm:.2f} |\n\n"
        f"Predictions that differ between the two: {differ} of {len(y_all)}.\n\n"
        "Batch 1, one thread, medians of interleaved rounds:\n\n" + table
        + f"\n\nCommand:\n\n```\n{cmd}\n```\n"
    )  # fmt: skip
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
