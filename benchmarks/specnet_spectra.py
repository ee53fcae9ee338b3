#!/usr/bin/env python
"""Kept entries and high-frequency energy of SpecNet maps per activation, at initialisation.

For Spec-VGG-16 and Spec-DenseNet-BC (the reduced widths of ``specnet_table.py``),
calibrated on the first ``--batch`` Fashion-MNIST training images, and for each spectral
activation (``spectral_tanh``: the paper's; ``spatial_relu``: beyond the paper; and no
activation, the pre-activation spectrum, for reference):

* **saved / kept**: per beta, the saved-for-backward bytes as % of the ReLU twin's
  and the kept share of the unique spectral entries (mean over blocks), from
  :func:`tvm_freq.specnet.memory.memory_ratios`;
* **high**: at beta 0, the share of each map's AC energy at frequencies above a
  quarter of the sampling rate (``max(|p|, |q|) > 1/4`` cycles per pixel), mean over the
  blocks with maps of 8x8 or more. It shows whether an activation spreads energy to
  high frequencies.

No training: this is the operating point where training starts. A few minutes on one core.
"""

from __future__ import annotations

import argparse

import torch

from tvm_freq.data import load_dataset
from tvm_freq.specnet import calibrate_, get_specnet, spectral_layers
from tvm_freq.specnet.memory import memory_ratios

MODELS = {"vgg16": {"width": 0.25}, "densenet": {"width": 0.5, "depth": 22, "head_size": 8}}


def high_share(name: str, activation: str | None, x: torch.Tensor) -> float:
    """Mean share of the AC energy above a quarter of the sampling rate, at beta 0."""
    kw = dict(MODELS[name])
    model = get_specnet(name, beta=0.0, in_channels=1, activation=activation, **kw)
    calibrate_(model, x)
    outs: list = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: outs.append(o))
             for _, m in spectral_layers(model)]  # fmt: skip
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    shares = []
    for o in outs:
        if o.grid < 8:
            continue
        e = o.to_dense().abs().square()
        e[..., 0, 0] = 0  # AC energy only
        r = torch.maximum(torch.fft.fftfreq(o.grid).abs()[:, None],
                          torch.fft.rfftfreq(o.grid)[None, :])  # fmt: skip
        shares.append(float(e[..., r > 0.25].sum() / e.sum()))
    return sum(shares) / len(shares)


def main(argv: list[str] | None = None) -> int:
    """Print one Markdown table row per model and activation."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="Fashion-MNIST directory")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--betas", type=float, nargs="+", default=[0.1, 0.25, 0.5, 0.75, 1.0, 1.5])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    x, y = load_dataset("fashion-mnist", "train", args.data, limit=args.batch, channels=1).tensors
    betas = " | ".join(f"beta {b:g}" for b in args.betas)
    print(f"| model | activation | high (%) | {betas} |")
    print("|---|---|---:|" + "---:|" * len(args.betas))
    for name, kw in MODELS.items():
        kw = dict(kw)
        width = kw.pop("width")
        for act in (None, "spectral_tanh", "spatial_relu"):
            cells = ""
            if act is not None:
                rows = memory_ratios(name, x, y, args.betas, width=width, peak=False,
                                     model_kwargs={**kw, "activation": act})  # fmt: skip
                cells = " | ".join(f"{100 * r.saved_ratio:.1f} / {100 * r.density:.1f}"
                                   for r in rows)  # fmt: skip
            else:
                cells = " | ".join("" for _ in args.betas)
            print(f"| {name} | {act or 'none (pre-activation)'} | "
                  f"{100 * high_share(name, act, x):.1f} | {cells} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
