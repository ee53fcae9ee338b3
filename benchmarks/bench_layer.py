"""Time single dense conv kernels on their default schedules, today against a git revision.

Each chosen conv is compiled alone, as a tiny ONNX model (Conv with bias, then Clip(0, 6)
as in MobileNetV2; random weights), by ``tvm_freq.build`` with an empty records directory
and the shipped records off, so every kernel runs its hand-written default schedule.
Layers are conv indices in a model's ONNX graph order (the numbering of
``per_layer_ort.py``'s table) or ``--conv CIN,COUT,H,W,K,STRIDE,GROUPS`` (input HxW,
"same" pads). ``CompiledModel.benchmark`` times the whole tiny model (one fused kernel
plus the VM's call, about a microsecond) in interleaved rounds: the minimum of each
round's repeats, the median over rounds::

    TVM_NUM_THREADS=1 python benchmarks/bench_layer.py --layers 4 7 --rounds 3
    TVM_NUM_THREADS=1 python benchmarks/bench_layer.py --model efficientnet-lite2-260 --layers 1

``--baseline REV`` also builds the layers with the library as it was at git revision REV
(a temporary ``git worktree``, built in a subprocess that imports that tree's
``tvm_freq``) and times both in the same rounds, after checking they give the same
output; ratio = REV's time / today's (> 1: today is faster)::

    TVM_NUM_THREADS=1 python benchmarks/bench_layer.py --conv 96,96,33,33,5,1,96 \\
        --target 'llvm -mcpu=core-avx2' --baseline 104263f --json layer.json

For kernel-level studies; networks: ``tvm-freq bench``, ``per_layer_ort.py``.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import json
import shlex
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]


def use_sources(tree: Path) -> None:
    """Make ``import tvm_freq`` load ``tree``'s sources, not the editable install's.

    pyproject maps ``tvm_freq.kernels`` and ``tvm_freq.schedules`` to the top-level
    ``kernels/`` and ``schedules/``; the editable install's finder would send those two to
    today's tree, so a finder ahead of it sends them to ``tree``'s.
    """
    dirs = {f"tvm_freq.{d}": tree / d for d in ("kernels", "schedules")}

    class TreeFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):  # noqa: D102
            if name not in dirs:
                return None
            return importlib.util.spec_from_file_location(
                name, dirs[name] / "__init__.py", submodule_search_locations=[str(dirs[name])]
            )

    sys.path.insert(0, str(tree))
    sys.meta_path.insert(0, TreeFinder())
    for name in ("tvm_freq", *dirs):  # now, so that a wrong tree fails before any build
        importlib.import_module(name)
    check_sources(tree)


def check_sources(tree: Path) -> None:
    """Raise unless every ``tvm_freq`` module imported so far comes from ``tree``."""
    for name, mod in list(sys.modules.items()):
        where = getattr(mod, "__file__", None)
        if name.startswith("tvm_freq") and where and not Path(where).is_relative_to(tree):
            raise RuntimeError(f"{name} imported from {where}, not from {tree}")


def parse_conv(text: str) -> dict:
    """A ``--conv CIN,COUT,H,W,K,STRIDE,GROUPS`` spec with "same" pads."""
    cin, cout, h, w, k, stride, groups = (int(v) for v in text.split(","))
    return {"cin": cin, "cout": cout, "h": h, "w": w, "k": [k, k], "stride": [stride] * 2,
            "groups": groups, "pads": [(k - 1) // 2, (k - 1) // 2, k // 2, k // 2]}  # fmt: skip


def conv_model(spec: dict, seed: int) -> onnx.ModelProto:
    """Conv (with bias) -> Clip(0, 6), as in MobileNetV2, on a 1 x Cin x H x W input.

    ``spec`` as ``per_layer_ort.conv_layers`` gives it; random weights (``seed``) scaled so that the
    clip keeps about half the outputs.
    """
    rng = np.random.default_rng(seed)
    (kh, kw), (sh, sw), pads, cin_g = spec["k"], spec["stride"], spec["pads"], spec["cin"]
    cin_g //= spec["groups"]
    weight = rng.standard_normal((spec["cout"], cin_g, kh, kw)) / np.sqrt(cin_g * kh * kw)
    consts = {"w": weight, "b": 0.1 * rng.standard_normal(spec["cout"]),
              "lo": np.array(0.0), "hi": np.array(6.0)}  # fmt: skip
    out = [1, spec["cout"], (spec["h"] + pads[0] + pads[2] - kh) // sh + 1,
           (spec["w"] + pads[1] + pads[3] - kw) // sw + 1]  # fmt: skip
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[kh, kw],
                              strides=[sh, sw], pads=pads, group=spec["groups"]),
             helper.make_node("Clip", ["y", "lo", "hi"], ["z"])]  # fmt: skip
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, "conv", [value("x", TensorProto.FLOAT, [1, spec["cin"], spec["h"], spec["w"]])],
        [value("z", TensorProto.FLOAT, out)],
        [numpy_helper.from_array(v.astype("float32"), k) for k, v in consts.items()],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def build_layer(path: Path, target: str | None, threads: int, records: Path):
    """Compile one tiny model with ``tvm_freq.build`` on default schedules only.

    ``records`` is an empty records root, so that no user records (``~/.cache``) apply,
    and the shipped ones are off; the build report must say every kernel is on a default
    schedule.
    """
    import tvm_freq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tvm_freq.UntunedWarning)  # checked below instead
        tuning = tvm_freq.Tuning(records=records, use_shipped=False)
        model = tvm_freq.build(str(path), target=target, threads=threads, tuning=tuning)
    rep = model.report
    if rep.tasks_with_records or len(rep.default_scheduled) != rep.num_tasks:
        raise RuntimeError(f"{path.name}: not all kernels on a default schedule:\n{rep}")
    return model


def emit(folder: Path, tree: Path, target: str | None, threads: int) -> int:
    """Hidden ``--emit`` mode: build every ``layer*.onnx`` in ``folder`` with ``tree``'s
    library and export each beside it as ``.so``."""
    tree = tree.resolve()
    use_sources(tree)
    with tempfile.TemporaryDirectory() as records:
        for path in sorted(folder.glob("layer*.onnx")):
            model = build_layer(path, target, threads, Path(records))
            model.export_library(path.with_suffix(".so"))
    check_sources(tree)  # also every module the builds imported
    return 0


def build_baseline(rev: str, folder: Path, target: str | None, threads: int) -> None:
    """Build ``folder``'s layers at revision ``rev`` in a temporary git worktree."""
    tree = folder / "worktree"
    git = ["git", "-C", str(ROOT), "worktree"]
    add = subprocess.run([*git, "add", "--detach", str(tree), rev], capture_output=True, text=True)
    if add.returncode:
        raise SystemExit(f"git worktree add {rev}: {add.stderr.strip()}")
    try:
        cmd = [sys.executable, __file__, "--emit", str(folder), "--worktree", str(tree),
               "--threads", str(threads), *(["--target", target] if target else [])]  # fmt: skip
        if subprocess.run(cmd).returncode:
            raise SystemExit(f"building the layers at {rev} failed (its error is above)")
    finally:
        subprocess.run([*git, "remove", "--force", str(tree)], check=True)


def make_layers(args: argparse.Namespace, folder: Path) -> list[dict]:
    """Write each chosen layer's tiny model to ``folder``; return specs, kind and MACs."""
    from per_layer_ort import UNTUNED_MODELS, conv_layers

    from tvm_freq.models import bundled_onnx

    specs = [{**parse_conv(c), "label": f"conv{i}"} for i, c in enumerate(args.conv)]
    if args.layers:
        if args.onnx:
            path = Path(args.onnx)
        elif args.model in UNTUNED_MODELS:
            from bench_untuned import _models  # exported as per_layer_ort.py exports them

            path = {n: p for n, p, _ in _models(folder)}[args.model]
        else:
            path = bundled_onnx(args.model)
        convs = conv_layers(path)  # per_layer_ort's numbering
        for i in args.layers:
            if convs[i]["auto_pad"] != "NOTSET" or set(convs[i]["dilations"]) != {1}:
                raise SystemExit(f"layer {i}: auto_pad and dilations are not supported here")
        specs += [{**convs[i], "label": str(i)} for i in args.layers]
    for i, spec in enumerate(specs):
        spec["path"] = folder / f"layer{i:03d}.onnx"
        onnx.save(conv_model(spec, seed=i), str(spec["path"]))
        # MACs and kind by per_layer_ort's definition, read off the tiny model's graph; a
        # graph layer's tiny model must do the layer's work.
        info = conv_layers(spec["path"])[0]
        if info["macs"] != spec.setdefault("macs", info["macs"]):
            raise RuntimeError(f"layer {spec['label']}: {info['macs']} != {spec['macs']} MACs")
        spec["kind"] = info["kind"]
    return specs


def table(rows: list[dict], baseline: str | None) -> str:
    """The markdown table: microseconds and GMAC/s per layer and version, and their sum."""
    names = list(rows[0]["median_us"])

    def line(label, kind, what, k, s, macs, us):
        cells = [f"{us[n]:.1f} | {macs / us[n] / 1e3:.1f}" for n in names]
        cells += [f"{us[baseline] / us['today']:.2f}"] if baseline else []
        return f"| {label} | {kind} | {what} | {k} | {s} | {macs / 1e6:.2f} | {' | '.join(cells)} |"

    head = [f"{n} us | {n} GMAC/s" for n in names] + ([f"{baseline} / today"] if baseline else [])
    rule = "|---|---|---|---:|---:|---:|" + "---:|" * (2 * len(names) + bool(baseline))
    lines = ["| layer | kind | Cin->Cout @ HxW | k | s | MMAC | " + " | ".join(head) + " |", rule]
    lines += [line(r["label"], r["kind"], f"{r['cin']}->{r['cout']} @ {r['h']}x{r['w']}",
                   r["k"][0], r["stride"][0], r["macs"], r["median_us"]) for r in rows]  # fmt: skip
    total = {n: sum(r["median_us"][n] for r in rows) for n in names}
    lines.append(line("**sum**", "", f"{len(rows)} layers", "", "", sum(r["macs"] for r in rows),
                      total))  # fmt: skip
    return "\n".join(lines)


def _argv_of(args: dict) -> list[str]:
    """The command line of a run whose JSON predates the ``argv`` field."""
    argv = ["--model", args["model"]] + (["--onnx", args["onnx"]] if args["onnx"] else [])
    argv += ["--layers", *map(str, args["layers"])] if args["layers"] else []
    for conv in args["conv"]:
        argv += ["--conv", conv]
    for flag in ("target", "threads", "rounds", "repeat", "baseline", "json"):
        argv += [f"--{flag}", str(args[flag])] if args[flag] is not None else []
    return argv


def report(doc: dict) -> str:
    """The markdown report of a run's JSON document: its command, target and table."""
    args = doc["args"]
    argv = doc.get("argv") or _argv_of(args)
    return (
        "# Dense conv kernels on their default schedules\n\n"
        f"Written by `TVM_NUM_THREADS={args['threads']} python benchmarks/bench_layer.py "
        f"{shlex.join(argv)}`: {doc['target']}, {args['threads']} thread(s), {args['rounds']} "
        f"rounds x {args['repeat']} repeats (median of rounds of the min of each round's "
        "repeats); each conv (with bias and ReLU6) compiled alone, HxW its input."
        + (f" `{args['baseline']}`: the library at that git revision, timed in the same "
           "rounds; ratio > 1: today is faster." if args["baseline"] else "")
        + "\n\n" + table(doc["layers"], args["baseline"]) + "\n"
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Build, check and time the layers; print a table (and write ``--json``)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="mobilenetv2-224",
                    help="zoo model, or one of per_layer_ort.py's --model names")  # fmt: skip
    ap.add_argument("--onnx", help="an ONNX file with a static input shape instead of --model")
    ap.add_argument("--layers", type=int, nargs="+", default=[],
                    help="conv indices, ONNX graph order (per_layer_ort's numbers)")  # fmt: skip
    ap.add_argument("--conv", action="append", default=[], metavar="CIN,COUT,H,W,K,STRIDE,GROUPS")
    ap.add_argument("--target", help="default: the host (tvm_freq.target.host_target)")
    ap.add_argument("--threads", type=int, default=1,
                    help="runtime threads; set TVM_NUM_THREADS to the same")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=10, help="measurements per round (~1 ms each)")
    ap.add_argument("--baseline", metavar="REV", help="also build the layers at git revision REV")
    ap.add_argument("--json", help="also write the timings here, and the table beside it (.md)")
    ap.add_argument("--report-only", metavar="JSON",
                    help="rewrite the .md beside a --json file of an earlier run")  # fmt: skip
    ap.add_argument("--emit", help=argparse.SUPPRESS)
    ap.add_argument("--worktree", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.emit:  # before anything imports tvm_freq
        return emit(Path(args.emit), Path(args.worktree), args.target, args.threads)
    if args.report_only:
        path = Path(args.report_only)
        path.with_suffix(".md").write_text(report(json.loads(path.read_text())))
        return 0
    if not (args.layers or args.conv):
        ap.error("give --layers or --conv")
    import tvm_freq
    from tvm_freq.target import resolve_target

    resolve_target(args.target, num_cores=args.threads)  # a bad --target fails here, early
    with tempfile.TemporaryDirectory() as tmp:
        rows = make_layers(args, Path(tmp))
        if args.baseline:  # first: a bad REV fails before today's builds
            build_baseline(args.baseline, Path(tmp), args.target, args.threads)
        for i, row in enumerate(rows):
            today = build_layer(row["path"], args.target, args.threads, Path(tmp, "records"))
            row["models"] = {"today": today}
            if args.baseline:
                base = row["models"][args.baseline] = tvm_freq.load(row["path"].with_suffix(".so"))
                if base.target != today.target:
                    raise RuntimeError(f"{args.baseline} built for {base.target}")
            shape = (1, row["cin"], row["h"], row["w"])
            row["x"] = x = np.random.default_rng(1000 + i).standard_normal(shape).astype("float32")
            ref = today(x)
            for name, model in row["models"].items():  # same weights, same answer
                np.testing.assert_allclose(model(x), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(),
                                           err_msg=f"{row['label']}: {name} differs")  # fmt: skip
            # Enough runs per measurement for about a millisecond, the same for every version.
            once = today.benchmark(x, repeat=3, number=1).min_ms
            row["number"], row["us"] = max(1, int(1.0 / once)), {n: [] for n in row["models"]}
        for _ in range(args.rounds):  # interleaved: drift on a shared machine hits all alike
            for row in rows:
                for name, model in row["models"].items():
                    res = model.benchmark(row["x"], repeat=args.repeat, number=row["number"])
                    row["us"][name].append(res.min_ms * 1e3)
        target = rows[0]["models"]["today"].target
    for row in rows:
        row["median_us"] = {n: float(np.median(t)) for n, t in row["us"].items()}
    print(f"{target}, {args.threads} thread(s), {args.rounds} rounds x {args.repeat} repeats "
          "(median of rounds of the min of each round's repeats), default schedules\n")  # fmt: skip
    print(table(rows, args.baseline))
    if args.json:
        keep = ("label", "kind", "cin", "cout", "h", "w", "k", "stride", "groups", "pads", "macs",
                "number", "us", "median_us")  # fmt: skip
        layers = [{k: r[k] for k in keep} for r in rows]
        doc = {"args": vars(args), "argv": sys.argv[1:] if argv is None else argv,
               "target": target, "layers": layers}  # fmt: skip
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
        Path(args.json).with_suffix(".md").write_text(report(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
