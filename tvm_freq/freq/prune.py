"""Profiling-based frequency pruning (paper section 3.2) driven by calibration data.

Calibration (:func:`collect_stats`) averages, over real batches, each wrapped layer's
per-channel per-coefficient DCT energy (mean of ``c^2``) and magnitude (mean of
``|c|``), for the input coefficients and, where a layer masks outputs, for the output
coefficients of the unmasked conv. Four strategies then turn an importance array
``[C, k*k]`` and a *threshold* into 0/1 masks. The threshold is the pruning
percentile: the share of each layer's ``(channel, coefficient)`` elements to remove,
lowest score first, in units the strategy allows:

* ``"channel"``: whole channels, scored by their total importance;
* ``"coefficient"``: whole coefficients (same for every channel), scored by their
  total importance; the output side gets the same coefficient mask, which is exact
  (an output coefficient no input channel feeds is zero) and truncates the IDCT;
* ``"channel-coefficient"``: single elements, scored by importance (sparse masks,
  kept for comparison);
* ``"band"``: channel-frequency bands, an element scored by the importance of its
  channel's tail from that coefficient on, so every channel keeps a prefix (dense).

:func:`band_masks_from_energy` is the energy-fraction form of band pruning: per channel,
the shortest prefix that holds ``energy`` of the energy. Its NumPy core,
:func:`tvm_freq.bands.band_counts_from_energy`, is what the compiler reuses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..bands import band_counts_from_energy, check_energy
from .accounting import ModelMacs, model_macs, refresh_macs
from .apply import KeptCounts, freq_layers
from .layer import FreqPointwiseConv2d
from .mask_math import is_prefix_mask
from .sites import run_example
from .transforms import block_dct

__all__ = [
    "Strategy",
    "STRATEGIES",
    "LayerStats",
    "collect_stats",
    "strategy_mask",
    "profile_masks",
    "apply_profile",
    "SweepPoint",
    "sweep",
    "find_threshold",
    "ContiguityReport",
    "contiguity_report",
    "band_masks_from_energy",
    "apply_counts",
]

Strategy = Literal["channel", "coefficient", "channel-coefficient", "band"]
STRATEGIES: tuple[str, ...] = ("channel", "coefficient", "channel-coefficient", "band")
Importance = Literal["energy", "magnitude"]


@dataclass
class LayerStats:
    """Calibration statistics of one wrapped layer.

    Attributes
    ----------
    name : str
        Layer name.
    block_size : int
        Macroblock size.
    in_energy, in_magnitude : numpy.ndarray
        ``[Cin, k*k]`` mean ``c^2`` and mean ``|c|`` of the input coefficients.
    out_energy, out_magnitude : numpy.ndarray or None
        ``[Cout, k*k]`` of the unmasked conv's output coefficients (bias excluded);
        only for layers that mask outputs.
    blocks : int
        Number of macroblocks averaged over (batch included).
    out_channels : int
        ``Cout`` of the layer.
    """

    name: str
    block_size: int
    in_energy: np.ndarray
    in_magnitude: np.ndarray
    out_energy: np.ndarray | None
    out_magnitude: np.ndarray | None
    blocks: int
    out_channels: int

    def importance(self, side: str, kind: Importance = "energy") -> np.ndarray | None:
        """Importance array of one side.

        Parameters
        ----------
        side : {"in", "out"}
            Input or output coefficients.
        kind : {"energy", "magnitude"}
            Mean ``c^2`` or mean ``|c|``.

        Returns
        -------
        numpy.ndarray or None
            ``[C, k*k]``, or ``None`` when that side was not recorded.
        """
        if kind not in ("energy", "magnitude"):
            raise ValueError(f"importance must be 'energy' or 'magnitude', got {kind!r}")
        if side == "in":
            return self.in_energy if kind == "energy" else self.in_magnitude
        if side == "out":
            return self.out_energy if kind == "energy" else self.out_magnitude
        raise ValueError(f"side must be 'in' or 'out', got {side!r}")


def _first_tensor(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise ValueError(
        f"calibration batches must be tensors or (input, ...) tuples, got {type(batch)}"
    )


def collect_stats(
    model: nn.Module, batches: Iterable[Any], max_batches: int | None = None
) -> dict[str, LayerStats]:
    """Average per-channel per-coefficient DCT statistics over calibration batches.

    The model runs in eval mode without gradients (BN uses its running statistics);
    the masks the layers currently apply affect downstream layers only.

    Parameters
    ----------
    model : torch.nn.Module
        A wrapped model.
    batches : iterable
        Tensors or ``(input, label)`` pairs, e.g. a ``DataLoader``.
    max_batches : int, optional
        Stop after this many batches.

    Returns
    -------
    dict of str to LayerStats
        One entry per wrapped layer that ran.
    """
    layers = dict(freq_layers(model))
    if not layers:
        raise ValueError("the model has no FreqPointwiseConv2d layers: call freq.apply_ first")
    sums: dict[str, dict[str, Any]] = {}

    def hook(name: str) -> Callable:
        def fn(mod: FreqPointwiseConv2d, args: tuple, out: Any) -> None:
            x = args[0].detach()
            c = block_dct(x, mod.block_size, basis=mod.basis)  # [N, Cin, BH, BW, nc]
            n, cin, bh, bw, nc = c.shape
            s = sums.setdefault(name, {"blocks": 0})
            acc = [("in", c.reshape(n, cin, bh * bw, nc))]
            if mod.where in ("out", "both"):
                acc.append(("out", F.conv2d(acc[0][1], mod.weight)))
            for side, t in acc:
                t64 = t.double()
                for key, val in (("energy", t64.square()), ("magnitude", t64.abs())):
                    v = val.sum(dim=(0, 2)).cpu().numpy()
                    s[f"{side}_{key}"] = s.get(f"{side}_{key}", 0) + v
            s["blocks"] += n * bh * bw

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    try:
        seen = 0
        for batch in batches:
            if max_batches is not None and seen >= max_batches:
                break
            x = _first_tensor(batch).to(next(model.parameters()).device)
            run_example(model, x)
            seen += 1
    finally:
        for h in handles:
            h.remove()
    if not sums:
        raise ValueError("no calibration batch reached a wrapped layer (empty batches?)")
    out = {}
    for name, s in sums.items():
        b = s["blocks"]
        out[name] = LayerStats(
            name,
            layers[name].block_size,
            s["in_energy"] / b,
            s["in_magnitude"] / b,
            s["out_energy"] / b if "out_energy" in s else None,
            s["out_magnitude"] / b if "out_magnitude" in s else None,
            b,
            layers[name].out_channels,
        )
    return out


def strategy_mask(importance: np.ndarray, strategy: Strategy, threshold: float) -> np.ndarray:
    """0/1 keep-mask of one side of one layer for a strategy and pruning percentile.

    Parameters
    ----------
    importance : numpy.ndarray
        ``[C, k*k]`` non-negative importance (energy or magnitude).
    strategy : {"channel", "coefficient", "channel-coefficient", "band"}
        Pruning granularity.
    threshold : float
        Share of the ``C * k*k`` elements to prune, in ``[0, 1]``; rounded to whole
        channels (``"channel"``) or whole coefficients (``"coefficient"``).

    Returns
    -------
    numpy.ndarray
        bool ``[C, k*k]``, True where kept. ``"band"`` masks are prefixes by construction.
    """
    imp = np.asarray(importance, dtype=np.float64)
    if imp.ndim != 2 or imp.size == 0:
        raise ValueError(f"importance must be a non-empty [C, k*k] array, got shape {imp.shape}")
    if np.any(imp < 0) or not np.all(np.isfinite(imp)):
        raise ValueError("importance must be finite and non-negative")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    c, nc = imp.shape
    keep = np.ones((c, nc), dtype=bool)
    if strategy == "channel":
        q = round(threshold * c)
        order = np.lexsort((np.arange(c), imp.sum(1)))  # lowest total first
        keep[order[:q]] = False
        return keep
    if strategy == "coefficient":
        q = round(threshold * nc)
        n = np.arange(nc)
        order = np.lexsort((-n, imp.sum(0)))  # ties: drop the higher frequency first
        keep[:, order[:q]] = False
        return keep
    if strategy == "channel-coefficient":
        score = imp
    else:
        # Tail importance: what is lost by cutting the channel's band at n. It does not
        # increase with n, and ties drop the higher n first, so the pruned set of
        # every channel is a suffix and the kept set a prefix.
        score = np.cumsum(imp[:, ::-1], axis=1)[:, ::-1]
    q = round(threshold * c * nc)
    n_idx = np.broadcast_to(np.arange(nc), (c, nc)).ravel()
    order = np.lexsort((-n_idx, score.ravel()))
    flat = keep.ravel()
    flat[order[:q]] = False
    return flat.reshape(c, nc)


def profile_masks(
    stats: Mapping[str, LayerStats],
    strategy: Strategy,
    threshold: float,
    importance: Importance = "energy",
    where: str | Mapping[str, str] = "in",
) -> dict[str, tuple[np.ndarray | None, np.ndarray | None]]:
    """Masks for every calibrated layer: ``name -> (in_mask, out_mask)``.

    Parameters
    ----------
    stats : mapping of str to LayerStats
        From :func:`collect_stats`.
    strategy : {"channel", "coefficient", "channel-coefficient", "band"}
        Pruning granularity.
    threshold : float
        Pruning percentile in ``[0, 1]`` (same for every layer).
    importance : {"energy", "magnitude"}
        Which statistic ranks coefficients.
    where : str or mapping
        Side(s) to mask, ``"in"``, ``"out"`` or ``"both"``, for all layers or per name.

    Returns
    -------
    dict
        ``(in_mask, out_mask)`` bool arrays, ``None`` for an unmasked side.
    """
    out: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = {}
    for name, st in stats.items():
        w = where[name] if isinstance(where, Mapping) else where
        if w not in ("in", "out", "both"):
            raise ValueError(f"where must be 'in', 'out' or 'both', got {w!r}")
        masks: dict[str, np.ndarray | None] = {"in": None, "out": None}
        for side in ("in", "out"):
            if w in (side, "both"):
                imp = st.importance(side, importance)
                if imp is None:
                    raise ValueError(
                        f"layer {name!r}: no {side}put statistics; collect them with the layer's "
                        f"where set to {side!r} or 'both'"
                    )
                masks[side] = strategy_mask(imp, strategy, threshold)
        if strategy == "coefficient":
            # One coefficient set per layer, and both sides can drop it exactly: an
            # output coefficient that no input channel feeds is zero.
            cols = np.ones(st.in_energy.shape[1], dtype=bool)
            for m in masks.values():
                if m is not None:
                    cols &= m.all(0)
            masks["in"] = np.repeat(cols[None, :], st.in_energy.shape[0], axis=0)
            masks["out"] = np.repeat(cols[None, :], st.out_channels, axis=0)
        out[name] = (masks["in"], masks["out"])
    return out


def apply_profile(
    model: nn.Module, masks: Mapping[str, tuple[np.ndarray | None, np.ndarray | None]]
) -> None:
    """Set fixed masks from :func:`profile_masks` on the model's wrapped layers.

    Parameters
    ----------
    model : torch.nn.Module
        A wrapped model.
    masks : mapping
        ``name -> (in_mask, out_mask)``.
    """
    layers = dict(freq_layers(model))
    for name, (mi, mo) in masks.items():
        if name not in layers:
            raise ValueError(f"layer {name!r} is not a FreqPointwiseConv2d of the model")
        layers[name].set_fixed_masks(
            None if mi is None else torch.from_numpy(np.asarray(mi, dtype=np.float32)),
            None if mo is None else torch.from_numpy(np.asarray(mo, dtype=np.float32)),
        )


@dataclass(frozen=True)
class SweepPoint:
    """One point of a threshold sweep."""

    strategy: str
    threshold: float
    pointwise_reduction: float
    network_reduction: float
    kept_fraction: float
    accuracy: float | None = None


def _save_state(model: nn.Module) -> dict[str, dict[str, Any]]:
    return {n: dict(layer.get_extra_state()) for n, layer in freq_layers(model)}


def _restore_state(model: nn.Module, state: dict[str, dict[str, Any]]) -> None:
    for n, layer in freq_layers(model):
        layer.set_extra_state(state[n])


def _kept_fraction(model: nn.Module) -> float:
    kept = total = 0
    for _, layer in freq_layers(model):
        for m in layer.hard_masks():
            kept += int(m.sum())
            total += m.size
    return kept / total if total else 1.0


def _point(
    model: nn.Module,
    stats: Mapping[str, LayerStats],
    strategy: Strategy,
    threshold: float,
    base: ModelMacs,
    importance: Importance,
    eval_fn: Callable[[nn.Module], float] | None,
) -> SweepPoint:
    layers = dict(freq_layers(model))
    where = {n: layers[n].where for n in stats}
    apply_profile(model, profile_masks(stats, strategy, threshold, importance, where))
    macs = refresh_macs(model, base)
    acc = float(eval_fn(model)) if eval_fn is not None else None
    return SweepPoint(
        strategy,
        float(threshold),
        macs.pointwise_reduction,
        macs.network_reduction,
        _kept_fraction(model),
        acc,
    )


def sweep(
    model: nn.Module,
    stats: Mapping[str, LayerStats],
    strategy: Strategy,
    thresholds: Sequence[float],
    example_input: Any,
    eval_fn: Callable[[nn.Module], float] | None = None,
    importance: Importance = "energy",
) -> list[SweepPoint]:
    """Evaluate a strategy at several pruning percentiles; the model's masks are restored.

    Each layer masks the side(s) its ``where`` names.

    Parameters
    ----------
    model : torch.nn.Module
        A wrapped model.
    stats : mapping of str to LayerStats
        From :func:`collect_stats`.
    strategy : {"channel", "coefficient", "channel-coefficient", "band"}
        Pruning granularity.
    thresholds : sequence of float
        Pruning percentiles in ``[0, 1]``.
    example_input : torch.Tensor or tuple
        One input for MAC counting (its batch size is the one counted).
    eval_fn : callable, optional
        ``eval_fn(model) -> accuracy`` run at every point (no retraining).
    importance : {"energy", "magnitude"}
        Ranking statistic.

    Returns
    -------
    list of SweepPoint
        One per threshold, MAC reductions with transform overhead included.
    """
    base = model_macs(model, example_input)
    saved = _save_state(model)
    try:
        return [_point(model, stats, strategy, t, base, importance, eval_fn) for t in thresholds]
    finally:
        _restore_state(model, saved)


def find_threshold(
    model: nn.Module,
    stats: Mapping[str, LayerStats],
    strategy: Strategy,
    target_reduction: float,
    example_input: Any,
    importance: Importance = "energy",
    tol: float = 1e-3,
    keep: bool = False,
) -> SweepPoint:
    """Smallest pruning percentile whose pointwise MAC reduction reaches a target.

    Bisection on the threshold; the reduction (transform overhead included) grows
    with the threshold.

    Parameters
    ----------
    model : torch.nn.Module
        A wrapped model.
    stats : mapping of str to LayerStats
        From :func:`collect_stats`.
    strategy : {"channel", "coefficient", "channel-coefficient", "band"}
        Pruning granularity.
    target_reduction : float
        Wanted ``dense / pruned`` MACs of the pointwise convs, > 0.
    example_input : torch.Tensor or tuple
        One input for MAC counting.
    importance : {"energy", "magnitude"}
        Ranking statistic.
    tol : float
        Bisection stops when the threshold interval is narrower than this.
    keep : bool
        Leave the found masks on the model (otherwise its masks are restored).

    Returns
    -------
    SweepPoint
        The point found.

    Raises
    ------
    ValueError
        When even pruning everything cannot reach the target.
    """
    if not target_reduction > 0:
        raise ValueError(f"target_reduction must be > 0, got {target_reduction}")
    base = model_macs(model, example_input)
    saved = _save_state(model)
    found: SweepPoint | None = None
    try:
        lo_pt = _point(model, stats, strategy, 0.0, base, importance, None)
        if lo_pt.pointwise_reduction >= target_reduction:
            found = lo_pt
            return found
        hi_pt = _point(model, stats, strategy, 1.0, base, importance, None)
        if hi_pt.pointwise_reduction < target_reduction:
            raise ValueError(
                f"{strategy} pruning reaches at most {hi_pt.pointwise_reduction:.3g}x pointwise "
                f"MAC reduction, below the target {target_reduction}x"
            )
        lo, hi = 0.0, 1.0
        found = hi_pt
        while hi - lo > tol:
            mid = (lo + hi) / 2
            pt = _point(model, stats, strategy, mid, base, importance, None)
            if pt.pointwise_reduction >= target_reduction:
                hi, found = mid, pt
            else:
                lo = mid
        return found
    finally:
        if keep and found is not None:
            _point(model, stats, strategy, found.threshold, base, importance, None)
        else:
            _restore_state(model, saved)


@dataclass(frozen=True)
class ContiguityReport:
    """How many channel masks keep a contiguous prefix of coefficients.

    Attributes
    ----------
    total : int
        Channel masks looked at (each side of each layer counts its channels).
    contiguous : int
        Of those, how many are prefixes (all-kept and all-pruned included).
    per_layer : dict of str to tuple of int
        ``name -> (contiguous, total)``.
    """

    total: int
    contiguous: int
    per_layer: dict[str, tuple[int, int]]

    @property
    def fraction(self) -> float:
        """``contiguous / total`` (1.0 when there is nothing to count)."""
        return self.contiguous / self.total if self.total else 1.0


def contiguity_report(
    masks: nn.Module | Mapping[str, Any],
) -> ContiguityReport:
    """Count channel masks that are already contiguous prefixes (paper: 98.8% on ResNeXt).

    Parameters
    ----------
    masks : torch.nn.Module or mapping
        A model with fixed masks (e.g. after channel-coefficient :func:`apply_profile`),
        or ``name -> [C, k*k] mask`` or ``name -> (in_mask, out_mask)``.

    Returns
    -------
    ContiguityReport
        Totals and per-layer counts; unmasked sides are not counted.
    """
    if isinstance(masks, nn.Module):
        items = {}
        for name, layer in freq_layers(masks):
            fixed = layer.get_extra_state()
            items[name] = (fixed.get("fixed_in"), fixed.get("fixed_out"))
    else:
        items = dict(masks)
    per_layer: dict[str, tuple[int, int]] = {}
    for name, value in items.items():
        sides = value if isinstance(value, tuple) else (value,)
        good = tot = 0
        for m in sides:
            if m is None:
                continue
            arr = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
            if arr.ndim != 2:
                raise ValueError(f"layer {name!r}: masks must be [C, k*k], got shape {arr.shape}")
            ok = is_prefix_mask(arr)
            good += int(ok.sum())
            tot += ok.size
        per_layer[name] = (good, tot)
    return ContiguityReport(
        sum(t for _, t in per_layer.values()), sum(g for g, _ in per_layer.values()), per_layer
    )


def band_masks_from_energy(
    source: Any,
    energy: float = 0.99,
    *,
    batches: Iterable[Any] | None = None,
    max_batches: int | None = None,
) -> Any:
    """Per channel, the shortest zigzag prefix holding ``energy`` of the coefficient energy.

    Parameters
    ----------
    source : numpy.ndarray, LayerStats, mapping or torch.nn.Module
        * ``[C, k*k]`` array of per-channel per-coefficient energies (plain NumPy, as
          the compiler computes them): returns the counts ``[C]``;
        * a :class:`LayerStats`: returns :class:`~tvm_freq.freq.KeptCounts` (outputs
          get counts too when output statistics were recorded, else all ``k*k``);
        * a mapping of names to either of those: returns a dict of the results;
        * a wrapped model: calibrates on ``batches`` first and returns
          ``{name: KeptCounts}``.
    energy : float
        Fraction of the energy to keep, in ``(0, 1]``.
    batches : iterable, optional
        Calibration batches; required when ``source`` is a model.
    max_batches : int, optional
        Limit on calibration batches.

    Returns
    -------
    numpy.ndarray, KeptCounts or dict
        Kept counts, see ``source``. Silent channels (zero energy) keep 0.
    """
    check_energy(energy)
    if isinstance(source, nn.Module):
        if batches is None:
            raise ValueError("band_masks_from_energy(model) needs calibration batches")
        source = collect_stats(source, batches, max_batches)
    if isinstance(source, LayerStats):
        kin = band_counts_from_energy(source.in_energy, energy).tolist()
        if source.out_energy is not None:
            kout = band_counts_from_energy(source.out_energy, energy).tolist()
        else:
            kout = [source.block_size**2] * source.out_channels
        return KeptCounts(source.block_size, kin, kout)
    if isinstance(source, Mapping):
        return {k: band_masks_from_energy(v, energy) for k, v in source.items()}
    return band_counts_from_energy(source, energy)


def apply_counts(model: nn.Module, counts: Mapping[str, KeptCounts]) -> None:
    """Set fixed band masks from kept counts on the model's wrapped layers.

    Parameters
    ----------
    model : torch.nn.Module
        A wrapped model.
    counts : mapping of str to KeptCounts
        ``name -> (block_size, kin, kout)``.
    """
    layers = dict(freq_layers(model))
    for name, kc in counts.items():
        if name not in layers:
            raise ValueError(f"layer {name!r} is not a FreqPointwiseConv2d of the model")
        layer = layers[name]
        if kc.block_size != layer.block_size:
            raise ValueError(
                f"layer {name!r}: counts are for block {kc.block_size}, layer uses "
                f"{layer.block_size}"
            )
        layer.set_counts(kc.kin, kc.kout)
