"""The band plan of a pruned pointwise conv (NumPy): sorted channels, band groups, alignment.

With channels sorted by how many zigzag coefficients they keep, every coefficient's
channel set is a prefix, and coefficients with similar prefixes are grouped so that each
group is one dense GEMM over its channel prefixes (:func:`plan_bands`).
:func:`align_plan` rounds the prefixes up to the vector width the kernels use. The
kernels (``tvm_freq.kernels.freq_pointwise``) and the pass build on this plan; it imports
neither PyTorch nor TVM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tvm_freq.dct import num_blocks
from tvm_freq.macs import LayerMacs, band_sizes, dense_pointwise_macs

__all__ = [
    "BandGroup",
    "BandPlan",
    "align_plan",
    "channel_chunks",
    "kernel_macs",
    "plan_bands",
    "round_up",
]


@dataclass(frozen=True)
class BandGroup:
    """Coefficients ``[n0, n1)`` computed as one GEMM over ``cin`` x ``cout`` channel prefixes."""

    n0: int
    n1: int
    cin: int
    cout: int

    @property
    def size(self) -> int:
        """Number of coefficients in the group."""
        return self.n1 - self.n0


@dataclass(frozen=True)
class BandPlan:
    """Everything the kernels need for one layer, derived from the masks."""

    k: int
    kin: tuple[int, ...]
    kout: tuple[int, ...]
    perm_in: tuple[int, ...]
    perm_out: tuple[int, ...]
    groups: tuple[BandGroup, ...]

    @property
    def kin_sorted(self) -> np.ndarray:
        """Kept counts of the input channels in sorted order."""
        return np.asarray(self.kin)[list(self.perm_in)]

    @property
    def kout_sorted(self) -> np.ndarray:
        """Kept counts of the output channels in sorted order."""
        return np.asarray(self.kout)[list(self.perm_out)]

    def gemm_macs_per_block(self) -> int:
        """MACs per block of the grouped GEMMs (padding inside groups included)."""
        return sum(g.size * g.cin * g.cout for g in self.groups)


def plan_bands(kin: Sequence[int], kout: Sequence[int], k: int, max_groups: int = 4) -> BandPlan:
    """Sort channels and group the bands so that few, wide GEMMs cover every kept coefficient.

    Groups are chosen by dynamic programming to minimise the padded GEMM MACs
    ``sum_g size_g * Cin_g * Cout_g`` with at most ``max_groups`` groups.

    Parameters
    ----------
    kin, kout : sequence of int
        Kept zigzag coefficients per input / output channel, each in ``[0, k*k]``.
    k : int
        Macroblock size.
    max_groups : int
        Upper bound on the number of GEMMs.

    Returns
    -------
    BandPlan
        Permutations and groups. Groups cover only coefficients some channel keeps.
    """
    if max_groups < 1:
        raise ValueError("max_groups must be >= 1")
    cin_n, cout_n = band_sizes(kin, kout, k)  # validates the counts
    kin_a, kout_a = np.asarray(kin, dtype=np.int64), np.asarray(kout, dtype=np.int64)
    # Stable sort: equal counts keep their original order (deterministic plans).
    perm_in = np.argsort(-kin_a, kind="stable")
    perm_out = np.argsort(-kout_a, kind="stable")
    live = int(np.max(np.nonzero((cin_n > 0) & (cout_n > 0))[0], initial=-1)) + 1
    if live == 0:
        return BandPlan(k, tuple(kin_a.tolist()), tuple(kout_a.tolist()),
                        tuple(perm_in.tolist()), tuple(perm_out.tolist()), ())  # fmt: skip

    def cost(a: int, b: int) -> int:
        return (b - a) * int(cin_n[a]) * int(cout_n[a])

    g_max = min(max_groups, live)
    inf = float("inf")
    best = [[inf] * (live + 1) for _ in range(g_max + 1)]
    cut = [[0] * (live + 1) for _ in range(g_max + 1)]
    best[0][0] = 0
    for g in range(1, g_max + 1):
        for b in range(1, live + 1):
            for a in range(g - 1, b):
                c = best[g - 1][a] + cost(a, b)
                if c < best[g][b]:
                    best[g][b], cut[g][b] = c, a
    g = min(range(1, g_max + 1), key=lambda i: (best[i][live], i))
    bounds, b = [], live
    while g > 0:
        a = cut[g][b]
        bounds.append((a, b))
        b, g = a, g - 1
    groups = tuple(
        BandGroup(a, b, int(cin_n[a]), int(cout_n[a]))
        for a, b in reversed(bounds)
        if cin_n[a] > 0 and cout_n[a] > 0
    )
    return BandPlan(k, tuple(kin_a.tolist()), tuple(kout_a.tolist()),
                    tuple(perm_in.tolist()), tuple(perm_out.tolist()), groups)  # fmt: skip


# ----------------------------------------------------------------------------- constants

# The fused kernel's vector alignments. Declared here, beside the plan they pad, so the
# PyTorch side can count what the kernel computes without importing TVM; the kernel
# module (``tvm_freq.kernels.freq_pointwise``) re-exports them for its schedules.
#: Output-channel alignment of fused GEMMs (a multiple of every CPU vector width used:
#: schedules vectorise a group's output channels in vectors of up to this many floats).
COUT_ALIGN = 16
#: Coefficient alignment of the fused DCT (whole vectors of 8 floats).
COEF_ALIGN = 8
#: Pixel alignment of the fused IDCT's block vectors (whole vectors of 16 floats).
PIX_ALIGN = 16


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (the vector padding of the kernels).

    Parameters
    ----------
    n, multiple : int
        Value and multiple (>= 1).

    Returns
    -------
    int
        The padded size.
    """
    return -(-n // multiple) * multiple


def align_plan(plan: BandPlan, multiple: int) -> BandPlan:
    """Round each group's output prefix up to a multiple of ``multiple`` (capped at ``Cout``).

    The extra rows compute channels that keep none of the group's coefficients; their
    IDCT basis rows are zero, so the result is exact. It lets a schedule vectorise the
    GEMM over output channels without a tail.

    Parameters
    ----------
    plan : BandPlan
        A plan from :func:`plan_bands`.
    multiple : int
        Vector width in channels, >= 1.

    Returns
    -------
    BandPlan
        The plan with aligned ``cout`` per group.
    """
    if multiple < 1:
        raise ValueError("multiple must be >= 1")
    cout = len(plan.kout)
    groups = tuple(
        BandGroup(g.n0, g.n1, g.cin, min(cout, round_up(g.cout, multiple))) for g in plan.groups
    )
    return BandPlan(plan.k, plan.kin, plan.kout, plan.perm_in, plan.perm_out, groups)


def channel_chunks(
    groups: Sequence[tuple[int, int, int]],
) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """Runs of sorted channels that need the same number of coefficients.

    A sorted input channel ``c`` is read by the groups whose prefix holds it
    (``c < Cin_g``), so its DCT needs the coefficients up to the end of the last such
    group; likewise for output channels and the IDCT. With channels sorted by kept count,
    these needs fall in steps, one run per group boundary: the transforms compute a
    run's coefficients only, not every channel's worst case.

    Parameters
    ----------
    groups : sequence of (size, cin_g, cout_g)
        Band groups in coefficient order.

    Returns
    -------
    (list, list)
        Input and output chunks, each ``(lo, hi, need)``: sorted channels ``[lo, hi)``
        need coefficients ``[0, need)``; ascending ``lo``, channels no group reads left out.
    """
    ends = np.cumsum([int(s) for s, _, _ in groups]).tolist()

    def runs(prefixes: list[int]) -> list[tuple[int, int, int]]:
        need = [0] * max(prefixes)
        for end, prefix in zip(ends, prefixes, strict=True):
            for c in range(prefix):
                need[c] = max(need[c], end)
        out: list[tuple[int, int, int]] = []
        for c, q in enumerate(need):
            if q == 0:
                continue
            if out and out[-1][1] == c and out[-1][2] == q:
                out[-1] = (out[-1][0], c + 1, q)
            else:
                out.append((c, c + 1, q))
        return out

    return runs([int(c) for _, c, _ in groups]), runs([int(c) for _, _, c in groups])


def kernel_macs(
    kin: Sequence[int],
    kout: Sequence[int],
    k: int,
    shape: tuple[int, int, int, int],
    out_channels: int,
    *,
    fused: bool = True,
    max_groups: int = 4,
) -> tuple[BandPlan, LayerMacs]:
    """The band plan of a masked conv and the MACs its kernels really compute.

    Whole groups, aligned prefixes and, when fused, one DCT over the widest prefix and an
    IDCT over padded pixel vectors: what the compiler's profitability rule weighs, as
    opposed to the ideal band count of :func:`tvm_freq.macs.pointwise_macs`.

    Parameters
    ----------
    kin, kout : sequence of int
        Kept zigzag coefficients per input / output channel.
    k : int
        Block size.
    shape : tuple of 4 int
        Input shape ``(N, Cin, H, W)``.
    out_channels : int
        ``Cout``.
    fused : bool
        One fused kernel per layer (the default kernel) or staged kernels.
    max_groups : int
        Most band groups.

    Returns
    -------
    (BandPlan, LayerMacs)
        The (aligned, when fused) plan and its MAC counts.
    """
    n, cin, h, w = shape
    plan = plan_bands(kin, kout, k, max_groups)
    if fused:
        plan = align_plan(plan, COUT_ALIGN)
    blocks = n * num_blocks(h, w, k)
    qtot = sum(g.size for g in plan.groups)
    if fused and plan.groups:
        # Each channel chunk transforms only the coefficients its channels can keep.
        ins, outs = channel_chunks([(g.size, g.cin, g.cout) for g in plan.groups])
        qpad = round_up(qtot, COEF_ALIGN)
        dct = blocks * k * k * sum((hi - lo) * min(round_up(q, COEF_ALIGN), qpad)
                                   for lo, hi, q in ins)  # fmt: skip
        idct = blocks * round_up(k * k, PIX_ALIGN) * sum((hi - lo) * q for lo, hi, q in outs)
    else:
        dct = blocks * k * k * sum(g.size * g.cin for g in plan.groups)
        idct = n * h * w * out_channels * qtot
    gemm = blocks * plan.gemm_macs_per_block()
    dense = dense_pointwise_macs(h, w, cin, out_channels, n)
    return plan, LayerMacs(dense=dense, dct=dct, gemm=gemm, idct=idct)
