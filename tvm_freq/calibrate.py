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

import itertools
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax

from .dct import block_dct_np
from .masks import LayerMask, MaskFile
from .passes.decisions import LayerDecision
from .passes.frequency_band_pointwise import eligible_convs

__all__ = [
    "LayerEnergy", "TargetedMasks", "auto_block", "calibrate_energies", "masks_for_reduction",
    "masks_from_energies", "model_batches", "network_mac_reduction",
]  # fmt: skip


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
    batches : array, tensor, or iterable of them
        Real input data for the model's one input, in batches of any size (see
        :func:`model_batches`): a single array, a list, a generator, or a DataLoader
        (of tensors or of ``(images, labels)`` pairs).
    block : int or "auto"
        Macroblock size for every layer, or :func:`auto_block` per layer.
    max_batches : int, optional
        Stop after this many of the user's batches.
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
    shape = tuple(int(d) for d in mod["main"].params[0].ty.shape.values)
    # Check the data before the (slow) probe compile: bad shapes fail at once.
    regrouped = model_batches(batches, shape, max_batches=max_batches)
    first = next(regrouped, None)
    if first is None:
        raise ValueError("calibration needs at least one batch")
    tgt = resolve_target(target, num_cores=1)
    vm = relax.VirtualMachine(tvm.compile(probe, target=tgt), tvm.cpu())
    sums: list[list[np.ndarray] | None] = [None] * count
    ks: list[int] = []
    for call in convs:
        _, _, h, w = (int(d) for d in call.args[0].ty.shape.values)
        ks.append(auto_block(h, w) if block == "auto" else int(block))
    for x in itertools.chain([first], regrouped):
        outs = vm["main"](tvm.runtime.tensor(x))
        for i in range(count):
            pair = []
            for arr in (outs[2 * i].numpy(), outs[2 * i + 1].numpy()):
                c = block_dct_np(arr.astype(np.float64), ks[i])  # [N, C, BH, BW, k*k]
                pair.append((c**2).sum(axis=(0, 2, 3)))
            old = sums[i]
            sums[i] = pair if old is None else [a + b for a, b in zip(old, pair, strict=True)]
    return [
        LayerEnergy(i, tuple(int(d) for d in call.args[1].ty.shape.values), ks[i], s[0], s[1])
        for i, (call, s) in enumerate(zip(convs, sums, strict=True))
    ]


def _as_array(item: Any) -> np.ndarray:
    if isinstance(item, (tuple, list)) and item and hasattr(item[0], "shape"):
        item = item[0]  # (images, labels) from a DataLoader: the images
    if hasattr(item, "detach"):
        item = item.detach().cpu().numpy()
    if not hasattr(item, "shape"):
        raise TypeError(
            f"calibration data must be arrays or tensors, got {type(item).__name__}"
        )
    return np.asarray(item)


def model_batches(
    data: Any, shape: tuple[int, ...], *, max_batches: int | None = None
) -> Iterator[np.ndarray]:
    """Regroup calibration data of any batch size into batches of the model's input shape.

    Parameters
    ----------
    data : array, tensor, or iterable of them
        One array (``[N, *shape[1:]]`` or a single sample ``shape[1:]``), or an iterable of
        such arrays (a list, a generator, a DataLoader; ``(images, labels)`` pairs give
        their images). Batch sizes may differ from the model's and from each other.
    shape : tuple of int
        The model's static input shape; ``shape[0]`` is its batch size.
    max_batches : int, optional
        Read at most this many items of ``data``.

    Yields
    ------
    numpy.ndarray
        Contiguous float32 arrays of exactly ``shape``. Samples left over at the end that do
        not fill a model batch are dropped, with a warning.

    Raises
    ------
    ValueError
        For data of the wrong rank or sample shape; the message gives the expected shape.
    """
    items = [data] if hasattr(data, "shape") else data
    n, sample = shape[0], tuple(shape[1:])
    pending: list[np.ndarray] = []
    have = 0
    for index, item in enumerate(items):
        if max_batches is not None and index >= max_batches:
            break
        x = _as_array(item)
        if x.shape == sample:
            x = x[None]
        if x.ndim != len(shape) or tuple(x.shape[1:]) != sample:
            raise ValueError(
                f"calibration batch {index} has shape {tuple(x.shape)}; the model's input is "
                f"{tuple(shape)}, so give arrays of shape (N, {', '.join(map(str, sample))}) "
                "for any N"
            )
        pending.append(x)
        have += x.shape[0]
        while have >= n:
            joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield np.ascontiguousarray(joined[:n], dtype="float32")
            rest = joined[n:]
            pending, have = ([rest] if len(rest) else []), len(rest)
    if have:
        warnings.warn(
            f"{have} calibration sample(s) left over do not fill a batch of {n} (the model's "
            "batch size) and were not used",
            stacklevel=2,
        )


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


def network_mac_reduction(decisions: Sequence[LayerDecision], network_macs: int) -> float:
    """Fraction of whole-network MACs that the rewritten layers remove (overhead counted).

    Parameters
    ----------
    decisions : sequence of LayerDecision
        The pass's decisions (``plan_layers`` or ``CompiledModel.report.layers``).
    network_macs : int
        MACs of the whole dense network (:func:`tvm_freq.macs.relax_network_macs`).

    Returns
    -------
    float
        Saved MACs over ``network_macs``.
    """
    saved = sum(d.dense_macs - d.freq_macs for d in decisions if d.rewritten)
    return saved / network_macs


@dataclass(frozen=True)
class TargetedMasks:
    """Masks whose energy level was searched to cut whole-network MACs by a target."""

    masks: MaskFile
    energy: float
    reduction: float


def masks_for_reduction(
    mod: tvm.IRModule,
    energies: list[LayerEnergy],
    reduction: float,
    *,
    model_name: str | None = None,
    **options: Any,
) -> TargetedMasks:
    """Bisect the energy level so that whole-network MACs fall by about ``reduction``.

    Each candidate is judged by the pass's own planning (:func:`plan_layers`, the MAC rule
    unless ``options`` give latencies), so the reduction is what a build with the same
    options does.

    Parameters
    ----------
    mod : tvm.IRModule
        Imported Relax module.
    energies : list of LayerEnergy
        From :func:`calibrate_energies`.
    reduction : float
        Target fraction of whole-network MACs removed, in ``(0, 1)``.
    model_name : str, optional
        Label stored in the mask file.
    **options : Any
        Options of :class:`~tvm_freq.passes.FrequencyBandPointwise`.

    Returns
    -------
    TargetedMasks
        The masks nearest the target, their energy level and the reduction they give.
    """
    from .macs import relax_network_macs
    from .passes.frequency_band_pointwise import plan_layers

    if not 0.0 < reduction < 1.0:
        raise ValueError(f"reduction must be in (0, 1), got {reduction}")
    total = relax_network_macs(mod)
    lo, hi = 0.05, 1.0  # the reduction shrinks as the kept energy grows
    best: TargetedMasks | None = None
    for _ in range(30):
        mid = (lo + hi) / 2
        masks = masks_from_energies(energies, mid, model_name=model_name)
        got = network_mac_reduction(plan_layers(mod, masks, **options), total)
        if best is None or abs(got - reduction) < abs(best.reduction - reduction):
            best = TargetedMasks(masks, mid, got)
        if got > reduction:
            lo = mid
        else:
            hi = mid
    assert best is not None
    return best
