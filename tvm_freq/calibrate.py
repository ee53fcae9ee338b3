"""Profiling-only masks: per-channel frequency bands from the coefficient energy of real data.

For a pretrained model that was never trained with FCMasks, the bands can come from
calibration batches instead (the paper's profiling, section 3.3): run the model, take the
input and the output of every eligible pointwise conv, block-DCT them, and keep per
channel the shortest zigzag prefix that holds a fraction ``energy`` of that channel's
coefficient energy. :func:`calibrate_energies` does the expensive part once;
:func:`masks_from_energies` turns it into a :class:`~tvm_freq.masks.MaskFile` for any
energy level, so a sweep costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax

from .dct import block_dct_np
from .masks import LayerMask, MaskFile
from .passes.frequency_band_pointwise import eligible_convs

__all__ = ["LayerEnergy", "auto_block", "calibrate_energies", "masks_from_energies"]


@dataclass(frozen=True)
class LayerEnergy:
    """Coefficient energy of one eligible pointwise conv, summed over calibration data."""

    ordinal: int
    weight_shape: tuple[int, int, int, int]
    block: int
    in_energy: np.ndarray  # [Cin, k*k]
    out_energy: np.ndarray  # [Cout, k*k]


def auto_block(height: int, width: int) -> int:
    """Default macroblock size: the largest k in 8..2 that divides both sides (else 4, padded).

    That gives 8x8 blocks at 112 and 56, and 7x7 at 28, 14 and 7 on MobileNetV2-224,
    close to the paper's choice (small blocks early, 7x7 late).

    Parameters
    ----------
    height, width : int
        Spatial size of the conv.

    Returns
    -------
    int
        Block size.
    """
    for k in range(8, 1, -1):
        if height % k == 0 and width % k == 0 and min(height, width) >= k:
            return k
    return 4


def _probe(mod: tvm.IRModule) -> tuple[tvm.IRModule, int]:
    """``main`` rewritten to return (input, output) of every eligible pointwise conv."""
    mod = relax.transform.ToNonDataflow()(mod)
    func = mod["main"]
    convs = eligible_convs(func)
    bound: dict[int, relax.Var] = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            for i, call in enumerate(convs):
                if binding.value.same_as(call):
                    bound[i] = binding.var
    outs: list[relax.Expr] = []
    for i, call in enumerate(convs):
        outs += [call.args[0], bound[i]]
    if not outs:
        return mod, 0
    body = relax.SeqExpr(func.body.blocks, relax.Tuple(outs))
    probe = relax.Function(func.params, body, ret_ty=relax.TupleType([o.ty for o in outs]),
                           attrs=func.attrs)  # fmt: skip
    out = tvm.IRModule({gv: f for gv, f in mod.functions.items()}, attrs=mod.attrs)
    out["main"] = probe  # keep the module's other functions (kernels the importer added)
    return out, len(convs)


def calibrate_energies(
    mod: tvm.IRModule,
    batches: Iterable[Any],
    *,
    block: int | str = "auto",
    max_batches: int | None = None,
    target: Any = None,
) -> list[LayerEnergy]:
    """Run calibration batches and measure the coefficient energy at every pointwise conv.

    Parameters
    ----------
    mod : tvm.IRModule
        Imported Relax module (``tvm_freq.frontend.import_model(...).mod``).
    batches : iterable of numpy.ndarray or torch.Tensor
        Real input batches with the model's input shape (one input).
    block : int or "auto"
        Macroblock size for every layer, or :func:`auto_block` per layer.
    max_batches : int, optional
        Stop after this many batches.
    target : str or tvm.target.Target, optional
        Where to run the (unscheduled, so keep calibration small) probe; default the host.

    Returns
    -------
    list of LayerEnergy
        One entry per eligible conv, in mask-file ordinal order.
    """
    from .target import resolve_target

    probe, count = _probe(mod)
    if count == 0:
        return []
    convs = eligible_convs(mod["main"])
    tgt = resolve_target(target, num_cores=1)
    vm = relax.VirtualMachine(tvm.compile(probe, target=tgt), tvm.cpu())
    sums: list[list[np.ndarray] | None] = [None] * count
    ks: list[int] = []
    for call in convs:
        _, _, h, w = (int(d) for d in call.args[0].ty.shape.values)
        ks.append(auto_block(h, w) if block == "auto" else int(block))
    seen = 0
    for batch in batches:
        if max_batches is not None and seen >= max_batches:
            break
        x = batch.detach().cpu().numpy() if hasattr(batch, "detach") else np.asarray(batch)
        outs = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x, dtype="float32")))
        for i in range(count):
            pair = []
            for arr in (outs[2 * i].numpy(), outs[2 * i + 1].numpy()):
                c = block_dct_np(arr.astype(np.float64), ks[i])  # [N, C, BH, BW, k*k]
                pair.append((c**2).sum(axis=(0, 2, 3)))
            old = sums[i]
            sums[i] = pair if old is None else [a + b for a, b in zip(old, pair, strict=True)]
        seen += 1
    if seen == 0:
        raise ValueError("calibration needs at least one batch")
    return [
        LayerEnergy(i, tuple(int(d) for d in call.args[1].ty.shape.values), ks[i], s[0], s[1])
        for i, (call, s) in enumerate(zip(convs, sums, strict=True))
    ]


def _counts(energy: np.ndarray, keep: float) -> list[int]:
    from .bands import band_counts_from_energy

    return [int(c) for c in band_counts_from_energy(energy, keep)]


def masks_from_energies(
    energies: list[LayerEnergy],
    energy: float = 0.99,
    *,
    layers: Iterable[int] | None = None,
    model_name: str | None = None,
) -> MaskFile:
    """Masks that keep, per channel, the shortest zigzag prefix holding ``energy`` of its energy.

    Parameters
    ----------
    energies : list of LayerEnergy
        From :func:`calibrate_energies`.
    energy : float
        Fraction of energy to keep, in ``(0, 1]``.
    layers : iterable of int, optional
        Ordinals to mask (default all).
    model_name : str, optional
        Label stored in the mask file.

    Returns
    -------
    MaskFile
        The masks; the compiler still leaves unprofitable layers dense.
    """
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    chosen = set(range(len(energies))) if layers is None else set(layers)
    out = []
    for e in energies:
        if e.ordinal not in chosen:
            continue
        out.append(LayerMask(f"pointwise#{e.ordinal}", e.ordinal, e.weight_shape, e.block,
                             tuple(_counts(e.in_energy, energy)),
                             tuple(_counts(e.out_energy, energy))))  # fmt: skip
    return MaskFile(tuple(out), num_pointwise=len(energies), model_name=model_name)
