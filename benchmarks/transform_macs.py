"""Where the fused frequency kernels' MACs go, for the bundled MobileNetV2-224 masks.

Counts, with no timing (deterministic): for each bundled mask set, the MACs the fused
kernels really compute (:func:`tvm_freq.band_plan.kernel_macs`: whole band groups,
aligned channel prefixes, coefficient and pixel vectors padded) split into DCT, band
GEMMs and IDCT, for several ``max_groups``; beside them the ideal counts of the masks
(:func:`tvm_freq.macs.band_macs`-style: every channel exactly its kept coefficients) and
what *separable* transforms would need (a row pass then a column pass over the kept
zigzag prefix: ``n*k + U*k*k`` per channel and block, ``U`` the rows or columns the
prefix spans), which a channel-innermost layout could vectorise::

    python benchmarks/transform_macs.py

Writes ``docs/results/transform-macs.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from tvm_freq.band_plan import kernel_macs
from tvm_freq.dct import num_blocks, zigzag
from tvm_freq.masks import load_masks
from tvm_freq.models import bundled_masks, default_input_shape, get_model

OUT = Path(__file__).resolve().parent.parent / "docs" / "results" / "transform-macs"
GROUPS = (2, 4, 8)


def pointwise_inputs(name: str) -> list[tuple[int, int, int, int]]:
    """``(cin, cout, h, w)`` of every dense 1x1 conv, in module order."""
    model = get_model(name).eval()
    shapes: list[tuple[int, int, int, int]] = []

    def hook(mod: torch.nn.Conv2d, args: tuple[torch.Tensor, ...], _out: object) -> None:
        _, c, h, w = args[0].shape
        shapes.append((int(c), mod.out_channels, int(h), int(w)))

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1:
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(default_input_shape(name)))
    return shapes


def spanned(n: int, k: int) -> int:
    """Rows or columns (the fewer) that the first ``n`` zigzag coefficients span."""
    if n <= 0:
        return 0
    zz = zigzag(k)[:n]
    return min(len({u for u, _ in zz}), len({v for _, v in zz}))


def count(masks: object, shapes: list[tuple[int, int, int, int]]) -> dict[str, object]:
    """MAC counts of one mask set (MMAC, whole network's pointwise layers)."""
    dense = ideal = sep = 0.0
    ideal_parts = np.zeros(3)
    executed = {g: np.zeros(3) for g in GROUPS}
    for layer, (cin, cout, h, w) in zip(masks.layers, shapes, strict=True):
        k = layer.block
        kin, kout = np.asarray(layer.kin), np.asarray(layer.kout)
        blocks = num_blocks(h, w, k)
        dense += h * w * cin * cout
        gemm = blocks * sum(int((kin > q).sum()) * int((kout > q).sum()) for q in range(k * k))
        parts = (blocks * k * k * kin.sum(), gemm, blocks * k * k * kout.sum())
        ideal_parts += parts
        sep_t = blocks * sum(n * k + spanned(n, k) * k * k for n in (*kin, *kout) if n > 0)
        sep += sep_t + gemm
        ideal += sum(parts)
        for g in GROUPS:
            _, m = kernel_macs(kin, kout, k, (1, cin, h, w), cout, max_groups=g)
            executed[g] += (m.dct, m.gemm, m.idct)
    return {
        "dense": dense / 1e6,
        "ideal": {
            "dct": ideal_parts[0] / 1e6,
            "gemm": ideal_parts[1] / 1e6,
            "idct": ideal_parts[2] / 1e6,
            "total": ideal / 1e6,
        },  # fmt: skip
        "separable_total": sep / 1e6,
        "executed": {
            str(g): {
                "dct": v[0] / 1e6,
                "gemm": v[1] / 1e6,
                "idct": v[2] / 1e6,
                "total": v.sum() / 1e6,
            }  # fmt: skip
            for g, v in executed.items()
        },
    }


def main() -> int:
    """Count every bundled mask set and write the tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="mobilenetv2-224")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    shapes = pointwise_inputs(args.model)
    results = {}
    for cut in (20, 40):
        masks = load_masks(bundled_masks(args.model, cut))
        results[f"cut{cut}"] = count(masks, shapes)
    lines = [
        f"# Where the fused frequency kernels' MACs go: {args.model}, bundled masks",
        "",
        "Pointwise layers only, MMAC per image, every masked layer in the frequency domain. "
        "*Executed*: what the fused kernels compute (whole band groups, aligned prefixes, "
        "padded vectors) for at most `max_groups` groups; *ideal*: each channel exactly its "
        "kept coefficients; *separable*: the ideal GEMMs plus row-then-column transforms of "
        "the kept zigzag prefix (not implemented).",
        "",
        "| masks | dense | max_groups | DCT | GEMM | IDCT | total | / dense |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        for g, e in r["executed"].items():
            lines.append(
                f"| {name} executed | {r['dense']:.1f} | {g} | {e['dct']:.1f} | {e['gemm']:.1f} "
                f"| {e['idct']:.1f} | {e['total']:.1f} | {e['total'] / r['dense']:.2f} |"
            )
        i = r["ideal"]
        lines.append(
            f"| {name} ideal | {r['dense']:.1f} | | {i['dct']:.1f} | {i['gemm']:.1f} "
            f"| {i['idct']:.1f} | {i['total']:.1f} | {i['total'] / r['dense']:.2f} |"
        )
        lines.append(
            f"| {name} separable | {r['dense']:.1f} | | | {i['gemm']:.1f} | "
            f"| {r['separable_total']:.1f} | {r['separable_total'] / r['dense']:.2f} |"
        )
    lines += ["", "Command:", "", "```", "python benchmarks/transform_macs.py", "```", ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
