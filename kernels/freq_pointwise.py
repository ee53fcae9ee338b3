"""Frequency-band pointwise conv kernels: truncated DCT -> banded dense GEMM -> truncated IDCT.

Each generator is a Python function of plain ints that returns an unscheduled
``PrimFunc`` (built with TE's ``create_prim_func``); schedules live in
``tvm_freq.schedules``. A NumPy reference sits beside each generator.

Layout and math, for one layer with ``k x k`` macroblocks (see ``tvm_freq.dct``):

* ``P = N * BH * BW`` blocks, ``BH = ceil(H / k)``, ``BW = ceil(W / k)``; block ``p`` is
  ``(n, bh, bw)`` in row-major order. Pixels outside ``H x W`` read as zero (the
  padding rule shared with training) and outputs are cropped to ``H x W``.
* Input channels are sorted by kept count, descending (``perm_in``); output
  channels likewise (``perm_out``). Channels that keep coefficient ``q`` are then
  prefixes, so each band is a dense GEMM.
* Bands are grouped: group ``[n0, n1)`` uses the channel prefixes of its first band
  (``Cin_g``, ``Cout_g``), and coefficients a channel does not keep are zeroed by
  folding the per-channel mask into the DCT basis (``dct_g[q, c, :] = 0`` when
  ``q >= kin_sorted[c]``). That keeps every kernel branch-free and exact.
* Channel permutations are folded into weights (``W[perm_out][:, perm_in]``) and into
  the kernels' indexing (``perm_in`` / ``slot_out`` tables), never as gathers of a
  whole tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tvm import te, tirx

from tvm_freq.band_plan import COEF_ALIGN as _COEF_ALIGN
from tvm_freq.band_plan import COUT_ALIGN as _COUT_ALIGN
from tvm_freq.band_plan import PIX_ALIGN as _PIX_ALIGN
from tvm_freq.band_plan import (
    BandGroup,
    BandPlan,
    align_plan,
    channel_chunks,
    plan_bands,
    round_up,
)
from tvm_freq.dct import dct_basis, padded_size

__all__ = [
    "BandGroup",
    "BandPlan",
    "align_plan",
    "round_up",
    "plan_bands",
    "truncated_dct",
    "band_gemm",
    "truncated_idct",
    "truncated_dct_ref",
    "band_gemm_ref",
    "truncated_idct_ref",
    "freq_pointwise_ref",
    "align_plan",
    "round_up",
    "fused_pointwise",
    "fused_constants",
    "fused_pointwise_ref",
    "FUSED_KERNEL",
    "ATTR_KERNEL",
    "ATTR_K",
    "ATTR_GEMMS",
    "ATTR_GROUPS",
    "STAGE_DCT_RAW",
    "STAGE_DCT",
    "STAGE_FREQ_OUT",
    "STAGE_IDCT",
    "STAGE_EPILOGUE",
    "ATTR_IN_CHUNKS",
    "ATTR_OUT_CHUNKS",
    "channel_chunks",
    "dct_raw_stage",
    "freq_out_stage",
    "idct_stage",
    "gemm_stage",
    "PARAM_PERM",
    "PARAM_DCT_BASIS",
    "PARAM_IDCT_BASIS",
    "PARAM_WEIGHT",
    "W_BLOCK",
    "pack_weight",
    "unpack_weight",
    "COUT_ALIGN",
    "COEF_ALIGN",
    "PIX_ALIGN",
]

# -- the contract of the fused kernel with its schedule (``tvm_freq.schedules``) and the
# pass that emits it (``tvm_freq.passes``): attribute keys, stage (block) names, parameter
# names and vector alignments. Everything a schedule looks up by name is declared here.

#: Value of the ``tvm_freq.kernel`` attribute of fused kernels; schedules find them by it.
FUSED_KERNEL = "fused_pointwise"
#: PrimFunc attribute: the kernel kind (:data:`FUSED_KERNEL`).
ATTR_KERNEL = "tvm_freq.kernel"
#: PrimFunc attribute: macroblock size ``k``.
ATTR_K = "tvm_freq.k"
#: PrimFunc attribute: number of band groups.
ATTR_GROUPS = "tvm_freq.groups"
#: PrimFunc attribute: the ``(group, output run)`` pairs that have a GEMM stage, flattened
#: as ``[g0, j0, g1, j1, ...]`` (:func:`gemm_stage`).
ATTR_GEMMS = "tvm_freq.gemms"

#: Stage (block and buffer) names of :func:`fused_pointwise`, in execution order.
STAGE_DCT_RAW = "dct_raw"  # unmasked truncated DCT of input chunk j: [hi - lo, P, need_j]
STAGE_DCT = "dct"  # chunks merged, input masks applied: [cin_max, P, Qpad]
STAGE_FREQ_OUT = "freq_out"  # output chunk j, masks and un-grouping: [P, hi - lo, need_j]
STAGE_IDCT = "idct"  # output chunk j: [P, hi - lo, kkp]
STAGE_EPILOGUE = "epilogue"  # un-sorting, bias, clip: [N, Cout, H, W]
#: PrimFunc attributes: the input / output channel chunks (:func:`channel_chunks`) as
#: ``[lo0, hi0, lo1, hi1, ...]``; chunk ``j``'s stages are named by the helpers below.
ATTR_IN_CHUNKS = "tvm_freq.in_chunks"
ATTR_OUT_CHUNKS = "tvm_freq.out_chunks"


def dct_raw_stage(chunk: int) -> str:
    """Stage name of input chunk ``chunk``'s DCT, e.g. ``"dct_raw0"``."""
    return f"{STAGE_DCT_RAW}{chunk}"


def freq_out_stage(chunk: int) -> str:
    """Stage name of output chunk ``chunk``'s masking and un-grouping, e.g. ``"freq_out0"``."""
    return f"{STAGE_FREQ_OUT}{chunk}"


def idct_stage(chunk: int) -> str:
    """Stage name of output chunk ``chunk``'s IDCT, e.g. ``"idct0"``."""
    return f"{STAGE_IDCT}{chunk}"


def gemm_stage(group: int, chunk: int) -> str:
    """Stage name of band group ``group``'s GEMM for output run ``chunk``.

    The GEMM is ``[P, size_g, width]``: the group's coefficients for the sorted output
    channels of the run that lie in the group's prefix.

    Parameters
    ----------
    group : int
        Group index, ``0 <= group < attrs[ATTR_GROUPS]``.
    chunk : int
        Output run (:func:`channel_chunks`); the pairs present are ``attrs[ATTR_GEMMS]``.

    Returns
    -------
    str
        E.g. ``"gemm0_1"``.
    """
    return f"gemm{group}_{chunk}"


#: Parameter (buffer) names of :func:`fused_pointwise` that schedules read shapes from.
PARAM_PERM = "perm"  # [cin_max]
PARAM_DCT_BASIS = "dct_basis"  # [k*k, Qpad]
PARAM_IDCT_BASIS = "idct_basis"  # [Q, kkp]
PARAM_WEIGHT = "W"  # [ceil(cout_max / W_BLOCK), cin_max, W_BLOCK]

#: The fused kernel's alignments (output channels of a GEMM group, DCT coefficients,
#: IDCT pixels) are declared with the band plan they pad, so that MACs can be counted
#: without TVM; they are this module's contract with the schedules all the same.
COUT_ALIGN, COEF_ALIGN, PIX_ALIGN = _COUT_ALIGN, _COEF_ALIGN, _PIX_ALIGN

#: Output channels per contiguous column block of the fused kernel's weights: a strip of
#: output channels then streams its weights in order (a [Cin, Cout] matrix is read one
#: 64-byte row piece at a time, 5 KB apart on 320->1280). Equal to COUT_ALIGN, so every
#: run starts a block.
W_BLOCK = COUT_ALIGN


def dct_group_basis(plan: BandPlan, group: BandGroup) -> np.ndarray:
    """Masked DCT basis of one group, ``[size, Cin_g, k*k]`` (zero where a channel drops ``q``).

    Parameters
    ----------
    plan : BandPlan
        The layer plan.
    group : BandGroup
        One of ``plan.groups``.

    Returns
    -------
    numpy.ndarray
        float32 basis.
    """
    d = dct_basis(plan.k, "float32")[group.n0 : group.n1]
    keep = plan.kin_sorted[: group.cin][None, :] > np.arange(group.n0, group.n1)[:, None]
    return np.ascontiguousarray(d[:, None, :] * keep[:, :, None], dtype="float32")


def idct_group_basis(plan: BandPlan, group: BandGroup) -> tuple[np.ndarray, np.ndarray]:
    """Masked IDCT basis ``[size, Cout, k*k]`` in original channel order, and slot table.

    Parameters
    ----------
    plan : BandPlan
        The layer plan.
    group : BandGroup
        One of ``plan.groups``.

    Returns
    -------
    tuple of numpy.ndarray
        ``basis`` (float32) and ``slot`` (int32, ``[Cout]``): output channel ``o`` reads
        row ``slot[o]`` of the group's GEMM output; its basis rows are zero when ``o``
        is outside the group's prefix or does not keep coefficient ``q``.
    """
    cout = len(plan.kout)
    rank = np.empty(cout, dtype=np.int64)
    rank[list(plan.perm_out)] = np.arange(cout)
    kout = np.asarray(plan.kout)
    qs = np.arange(group.n0, group.n1)
    keep = (rank[None, :] < group.cout) & (kout[None, :] > qs[:, None])
    d = dct_basis(plan.k, "float32")[group.n0 : group.n1]
    basis = np.ascontiguousarray(d[:, None, :] * keep[:, :, None], dtype="float32")
    slot = np.minimum(rank, group.cout - 1).astype("int32")
    return basis, slot


def group_weight(plan: BandPlan, weight: np.ndarray, group: BandGroup) -> np.ndarray:
    """Sorted dense weight block ``W[perm_out][:, perm_in][:Cout_g, :Cin_g]``.

    Parameters
    ----------
    plan : BandPlan
        The layer plan.
    weight : numpy.ndarray
        ``[Cout, Cin]`` (or ``[Cout, Cin, 1, 1]``) conv weight.
    group : BandGroup
        One of ``plan.groups``.

    Returns
    -------
    numpy.ndarray
        float32 ``[Cout_g, Cin_g]``.
    """
    w = np.asarray(weight).reshape(len(plan.kout), len(plan.kin))
    w = w[list(plan.perm_out)][:, list(plan.perm_in)]
    return np.ascontiguousarray(w[: group.cout, : group.cin], dtype="float32")


# ----------------------------------------------------------------------------- kernels


def _blocks(n: int, h: int, w: int, k: int) -> tuple[int, int, int]:
    bh, bw = padded_size(h, k) // k, padded_size(w, k) // k
    return bh, bw, n * bh * bw


def truncated_dct(
    n: int, cin: int, h: int, w: int, k: int, size: int, cin_g: int, dtype: str = "float32"
) -> tirx.PrimFunc:
    """Truncated blocked DCT of one band group, reading NCHW directly.

    ``out[q, c, p] = sum_ij basis[q, c, ij] * X[b, perm[c], bh*k + i, bw*k + j]``
    for the ``cin_g`` sorted input channels of the group and its ``size`` coefficients.

    Parameters
    ----------
    n, cin, h, w : int
        Input shape (NCHW).
    k : int
        Macroblock size.
    size : int
        Coefficients in the group.
    cin_g : int
        Input channels in the group's prefix.
    dtype : str
        Data type.

    Returns
    -------
    tvm.tirx.PrimFunc
        ``(X[n, cin, h, w], basis[size, cin_g, k*k], perm[cin_g] int32) -> out[size, cin_g, P]``.
    """
    bh, bw, p = _blocks(n, h, w, k)
    x = te.placeholder((n, cin, h, w), dtype, name="X")
    basis = te.placeholder((size, cin_g, k * k), dtype, name="basis")
    perm = te.placeholder((cin_g,), "int32", name="perm")
    r = te.reduce_axis((0, k * k), name="r")
    pad = padded_size(h, k) != h or padded_size(w, k) != w

    def body(q, c, blk):
        b, rest = blk // (bh * bw), blk % (bh * bw)
        hh = (rest // bw) * k + r // k
        ww = (rest % bw) * k + r % k
        if pad:
            inside = tirx.all(hh < h, ww < w)
            val = te.if_then_else(
                inside, x[b, perm[c], tirx.min(hh, h - 1), tirx.min(ww, w - 1)], 0.0
            )
        else:
            val = x[b, perm[c], hh, ww]
        return te.sum(basis[q, c, r] * val, axis=r)

    out = te.compute((size, cin_g, p), body, name="dct")
    return te.create_prim_func([x, basis, perm, out]).with_attr("global_symbol", "freq_dct")


def band_gemm(size: int, cout_g: int, cin_g: int, p: int, dtype: str = "float32") -> tirx.PrimFunc:
    """Dense GEMM of one band group: ``out[q] = W @ Xf[q]`` for every coefficient ``q``.

    Parameters
    ----------
    size : int
        Coefficients in the group (the batch of the GEMM).
    cout_g, cin_g : int
        Output / input channels of the group's prefixes.
    p : int
        Number of blocks.
    dtype : str
        Data type.

    Returns
    -------
    tvm.tirx.PrimFunc
        ``(W[cout_g, cin_g], Xf[size, cin_g, p]) -> out[size, cout_g, p]``.
    """
    wt = te.placeholder((cout_g, cin_g), dtype, name="W")
    xf = te.placeholder((size, cin_g, p), dtype, name="Xf")
    r = te.reduce_axis((0, cin_g), name="r")
    out = te.compute(
        (size, cout_g, p), lambda q, o, blk: te.sum(wt[o, r] * xf[q, r, blk], axis=r), name="gemm"
    )
    return te.create_prim_func([wt, xf, out]).with_attr("global_symbol", "freq_gemm")


def truncated_idct(
    n: int, cout: int, h: int, w: int, k: int, size: int, cout_g: int, dtype: str = "float32"
) -> tirx.PrimFunc:
    """Truncated blocked IDCT of one band group, writing NCHW in the original channel order.

    ``Y[b, o, y, x] = sum_q basis[q, o, ij] * Yf[q, slot[o], p]`` with ``p`` and ``ij``
    the block and the position in it of pixel ``(y, x)``; cropped to ``h x w``.

    Parameters
    ----------
    n, cout, h, w : int
        Output shape (NCHW).
    k : int
        Macroblock size.
    size : int
        Coefficients in the group.
    cout_g : int
        Output channels in the group's prefix (rows of ``Yf``).
    dtype : str
        Data type.

    Returns
    -------
    tvm.tirx.PrimFunc
        ``(Yf[size, cout_g, P], basis[size, cout, k*k], slot[cout] int32) -> Y[n, cout, h, w]``.
    """
    bh, bw, p = _blocks(n, h, w, k)
    yf = te.placeholder((size, cout_g, p), dtype, name="Yf")
    basis = te.placeholder((size, cout, k * k), dtype, name="basis")
    slot = te.placeholder((cout,), "int32", name="slot")
    q = te.reduce_axis((0, size), name="q")

    def body(b, o, yy, xx):
        blk = (b * bh + yy // k) * bw + xx // k
        ij = (yy % k) * k + xx % k
        return te.sum(basis[q, o, ij] * yf[q, slot[o], blk], axis=q)

    out = te.compute((n, cout, h, w), body, name="idct")
    return te.create_prim_func([yf, basis, slot, out]).with_attr("global_symbol", "freq_idct")


def fused_pointwise(
    n: int,
    cin: int,
    cout: int,
    h: int,
    w: int,
    k: int,
    groups: Sequence[tuple[int, int, int]],
    bias: bool = True,
    clip: tuple[float, float] | None = None,
    coef_align: int = COEF_ALIGN,
    pix_align: int = PIX_ALIGN,
    dtype: str = "float32",
) -> tirx.PrimFunc:
    """The whole layer in one kernel: truncated DCT -> grouped band GEMMs -> IDCT (+ epilogue).

    Stages, for ``P`` blocks, ``Q = sum(size_g)`` live coefficients and the zigzag DCT
    basis ``D`` (one small matrix shared by every channel):

    * ``dct_raw_j[c, p, q] = sum_r D[q, r] * X[b, perm[c], pixel(p, r)]`` for each run ``j``
      of sorted input channels (:func:`channel_chunks`), over only the ``need_j``
      coefficients its channels can keep (rounded up to whole vectors);
    * ``dct[c, p, q] = dct_raw_j[c, p, q]`` (``c``'s run) where ``q < kin[c]``, else 0
      (the input masks);
    * ``gemm_g_j[p, q, s] = sum_c dct[c, p, off_g + q] * W[c, lo_j + s]`` over the group's
      input prefix, for the sorted output channels of run ``j`` in the group's prefix;
    * ``freq_out_j[p, s, q] = gemm_{g(q)}_j[p, q', s]`` for each run ``j`` of sorted output
      channels and ``q < need_j``, where ``s < Cout_g`` and ``q < kout[s]``, else 0 (the
      output masks);
    * ``idct_j[p, s, ij] = sum_{q < need_j} freq_out_j[p, s, q] * D[q, ij]``;
    * ``Y[b, o, y, x] = idct_j[p, rank[o], ij] (+ bias[o]) (clamped)``, ``j`` the run of
      ``rank[o]``: back to the original channel order, one whole channel plane at a time.

    With channels sorted by kept count, a channel's need falls in steps at the group
    boundaries, so the transforms cost about what the channels keep rather than every
    channel transforming the widest channel's coefficients.

    Masks are applied from the kept counts (``kin``, ``kout``), not folded into per-channel
    bases: the constants stay a few KB, so a block's work streams only its weights, and
    the inner loops are plain FMAs with no conditions. The coefficient axis is innermost
    in the DCT and GEMM outputs, so a schedule can vectorise the DCT over coefficients,
    the GEMMs over output channels and the IDCT over a block, and keep one block's
    intermediates in cache (see ``tvm_freq.schedules.freq_pointwise``).

    Parameters
    ----------
    n, cin, cout, h, w : int
        Input batch, channels, and spatial size; ``cout`` output channels.
    k : int
        Macroblock size.
    groups : sequence of (size, cin_g, cout_g)
        Band groups in coefficient order, e.g. from :func:`align_plan`.
    bias : bool
        Take a ``bias[cout]`` argument and add it.
    clip : (float, float), optional
        Clamp the output to ``[lo, hi]`` (ReLU6 is ``(0, 6)``), after the bias.
    coef_align : int
        The DCT output holds ``Q`` rounded up to a multiple of this (zero basis columns),
        so that a schedule can compute whole machine vectors; GEMMs read only ``Q``.
    pix_align : int
        Likewise, the IDCT output holds ``k*k`` pixels rounded up to a multiple of this
        (zero basis columns); the epilogue reads only the real pixels.
    dtype : str
        Data type.

    Returns
    -------
    tvm.tirx.PrimFunc
        ``(X, perm, kin, dct_basis, W, idct_basis, kout, rank[, bias]) -> Y``, with ``W``
        in :func:`pack_weight`'s blocked layout,
        unscheduled, with attribute ``tvm_freq.kernel = "fused_pointwise"``. The
        un-sorting, bias and clip are the block ``epilogue``; Relax cannot fuse
        elementwise ops into a multi-stage kernel, so they are part of the kernel.
    """
    if not groups:
        raise ValueError("fused_pointwise needs at least one band group")
    if coef_align < 1 or pix_align < 1:
        raise ValueError("coef_align and pix_align must be >= 1")
    sizes = [int(s) for s, _, _ in groups]
    bh, bw, p = _blocks(n, h, w, k)
    cin_max = max(int(c) for _, c, _ in groups)
    qtot = sum(sizes)
    qpad = round_up(qtot, coef_align)
    offs = np.cumsum([0, *sizes]).tolist()
    in_chunks, out_chunks = channel_chunks(groups)
    x = te.placeholder((n, cin, h, w), dtype, name="X")
    perm = te.placeholder((cin_max,), "int32", name=PARAM_PERM)
    kin = te.placeholder((cin_max,), "int32", name="kin")
    d_in = te.placeholder((k * k, qpad), dtype, name=PARAM_DCT_BASIS)
    kkp = round_up(k * k, pix_align)
    d_out = te.placeholder((qtot, kkp), dtype, name=PARAM_IDCT_BASIS)
    kout_s = te.placeholder((cout,), "int32", name="kout")  # sorted order
    rank = te.placeholder((cout,), "int32", name="rank")
    pad = padded_size(h, k) != h or padded_size(w, k) != w
    zero = tirx.const(0.0, dtype)

    def dct_body(lo: int):
        r = te.reduce_axis((0, k * k), name="r")

        def body(c, blk, q):
            b, rest = blk // (bh * bw), blk % (bh * bw)
            hh = (rest // bw) * k + r // k
            ww = (rest % bw) * k + r % k
            ch = _clamp(perm[c + lo], cin)  # memory-safe for any table (tuning runs random data)
            if pad:
                inside = tirx.all(hh < h, ww < w)
                val = te.if_then_else(inside, x[b, ch, tirx.min(hh, h - 1), tirx.min(ww, w - 1)],
                                      0.0)  # fmt: skip
            else:
                val = x[b, ch, hh, ww]
            return te.sum(val * d_in[r, q], axis=r)

        return body

    # One DCT per input chunk, for the coefficients its channels can keep (padded to whole
    # vectors); the masking stage merges them into one [cin_max, P, Qpad] operand.
    raws = [
        te.compute((hi - lo, p, min(round_up(need, coef_align), qpad)), dct_body(lo),
                   name=dct_raw_stage(j))
        for j, (lo, hi, need) in enumerate(in_chunks)
    ]  # fmt: skip

    def masked(c, blk, q):
        val = zero
        for (lo, hi, _), raw in zip(in_chunks, raws, strict=True):
            qj = int(raw.shape[2])
            term = raw[_clamp(c - lo, hi - lo), blk, tirx.min(q, qj - 1)]
            val = te.if_then_else(c >= lo, term, val)  # chunks ascend: the last match wins
        return tirx.Select(q < kin[c], val, zero)

    xf = te.compute((cin_max, p, qpad), masked, name=STAGE_DCT)

    def gemm_body(wt: te.Tensor, rc: tirx.IterVar, off: int, lo: int):
        def body(blk, q, o):
            col = o + lo
            return te.sum(xf[rc, blk, q + off] * wt[col // W_BLOCK, rc, col % W_BLOCK], axis=rc)

        return body

    # One sorted weight matrix; every group reads its prefix block. Each group's GEMM is
    # cut at the output runs, so that a run's GEMMs, masking and IDCT can share one strip
    # of output channels: the strip of weights is then read from memory once for all
    # groups, not once per group (the groups' prefixes overlap).
    cout_max = max(int(c) for _, _, c in groups)
    wt = te.placeholder((-(-cout_max // W_BLOCK), cin_max, W_BLOCK), dtype, name=PARAM_WEIGHT)
    gemms: dict[tuple[int, int], te.Tensor] = {}
    for j, (lo, hi, need) in enumerate(out_chunks):
        for i, (size, cin_g, cout_g) in enumerate(groups):
            if offs[i] >= need or cout_g <= lo:
                continue  # no channel of the run reads this group
            rc = te.reduce_axis((0, cin_g), name="c")
            width = min(hi, cout_g) - lo
            gemms[i, j] = te.compute((p, size, width), gemm_body(wt, rc, offs[i], lo),
                                     name=gemm_stage(i, j))  # fmt: skip

    def gather(j: int, lo: int, need: int):
        # Output channel lo + s (sorted) of coefficient q < need: its group's GEMM row, or
        # 0 when the channel is outside the group's prefix or does not keep q.
        def body(blk, s, q):
            val = None
            for i in reversed(range(len(groups))):
                if (i, j) not in gemms:
                    continue
                width = int(gemms[i, j].shape[2])
                q_local = tirx.max(tirx.min(q - offs[i], sizes[i] - 1), 0)
                term = te.if_then_else(
                    s < width, gemms[i, j][blk, q_local, tirx.min(s, width - 1)], zero
                )
                val = term if val is None else te.if_then_else(q < offs[i + 1], term, val)
            return te.if_then_else(q < kout_s[s + lo], val, zero)

        return body

    def idct_body(yf: te.Tensor, need: int):
        rq = te.reduce_axis((0, need), name="q")
        return lambda blk, s, ij: te.sum(yf[blk, s, rq] * d_out[rq, ij], axis=rq)

    # One IDCT per output chunk, over the coefficients its channels can keep.
    pixes = []
    for j, (lo, hi, need) in enumerate(out_chunks):
        yf = te.compute((p, hi - lo, need), gather(j, lo, need), name=freq_out_stage(j))
        pixes.append(te.compute((p, hi - lo, kkp), idct_body(yf, need), name=idct_stage(j)))

    def epilogue(b, o, yy, xx):
        blk = (b * bh + yy // k) * bw + xx // k
        ij = (yy % k) * k + xx % k
        s = _clamp(rank[o], cout)
        # Channel o's chunk (selects, uniform over a row's vector): a separate merge
        # stage copying the chunks into one buffer measured slower.
        v = zero  # channels beyond every chunk keep nothing
        for (lo, hi, _), pix in zip(out_chunks, pixes, strict=True):
            v = te.if_then_else(tirx.all(s >= lo, s < hi), pix[blk, _clamp(s - lo, hi - lo), ij], v)
        if bvec is not None:
            v = v + bvec[o]
        if clip is not None:
            v = tirx.max(tirx.min(v, tirx.const(clip[1], dtype)), tirx.const(clip[0], dtype))
        return v

    bvec = te.placeholder((cout,), dtype, name="bias") if bias else None
    y = te.compute((n, cout, h, w), epilogue, name=STAGE_EPILOGUE)
    args = [x, perm, kin, d_in, wt, d_out, kout_s, rank]
    if bvec is not None:
        args.append(bvec)
    func = te.create_prim_func([*args, y])
    return func.with_attrs({
        "global_symbol": "freq_fused", ATTR_KERNEL: FUSED_KERNEL, ATTR_K: k,
        ATTR_GROUPS: len(groups),
        ATTR_GEMMS: [x for pair in gemms for x in pair],
        ATTR_IN_CHUNKS: [b for lo, hi, _ in in_chunks for b in (lo, hi)],
        ATTR_OUT_CHUNKS: [b for lo, hi, _ in out_chunks for b in (lo, hi)],
    })  # fmt: skip


def pack_weight(w: np.ndarray) -> np.ndarray:
    """``[Cin, Cout]`` sorted weights -> the fused kernel's ``[ceil(Cout / W_BLOCK), Cin,
    W_BLOCK]`` (zero-padded output channels).

    Parameters
    ----------
    w : numpy.ndarray
        ``[Cin, Cout]`` weights, input channels first.

    Returns
    -------
    numpy.ndarray
        Column blocks of :data:`W_BLOCK` output channels, each contiguous.
    """
    c, o = w.shape
    w = np.pad(np.asarray(w, dtype="float32"), ((0, 0), (0, -o % W_BLOCK)))
    return np.ascontiguousarray(w.reshape(c, -1, W_BLOCK).transpose(1, 0, 2))


def unpack_weight(wp: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_weight` (with the padded output channels): ``[Cin, Cout_pad]``."""
    return np.ascontiguousarray(wp.transpose(1, 0, 2).reshape(wp.shape[1], -1))


def _clamp(index: tirx.PrimExpr, extent: int) -> tirx.PrimExpr:
    """An index read from a table, clamped into ``[0, extent)``: one scalar op per channel."""
    return tirx.max(tirx.min(index, extent - 1), 0)


def fused_constants(
    plan: BandPlan,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    coef_align: int = COEF_ALIGN,
    pix_align: int = PIX_ALIGN,
) -> list[np.ndarray]:
    """The constant arguments of :func:`fused_pointwise` for a plan, in argument order.

    Parameters
    ----------
    plan : BandPlan
        The layer plan (its groups give the kernel's ``groups``).
    weight : numpy.ndarray
        ``[Cout, Cin(, 1, 1)]`` conv weight.
    bias : numpy.ndarray, optional
        ``[Cout]``; appended when given.
    coef_align, pix_align : int
        As in :func:`fused_pointwise` (the bases get zero columns up to them).

    Returns
    -------
    list of numpy.ndarray
        ``perm, kin, dct_basis, W, idct_basis, kout (sorted), rank[, bias]``; ``W`` is the
        sorted ``[Cin, Cout]`` weight packed by :func:`pack_weight`.
    """
    cin_max = max(g.cin for g in plan.groups)
    cout_max = max(g.cout for g in plan.groups)
    qtot = sum(g.size for g in plan.groups)
    qpad = round_up(qtot, coef_align)
    d = dct_basis(plan.k, "float32")[:qtot]  # [Q, k*k], zigzag rows
    kk = plan.k * plan.k
    kkp = round_up(kk, pix_align)
    rank = np.empty(len(plan.kout), dtype="int32")
    rank[list(plan.perm_out)] = np.arange(len(plan.kout))
    out = [
        np.asarray(plan.perm_in[:cin_max], dtype="int32"),
        np.asarray(plan.kin_sorted[:cin_max], dtype="int32"),
        np.ascontiguousarray(np.pad(d.T, ((0, 0), (0, qpad - qtot))), dtype="float32"),
        pack_weight(group_weight(plan, weight, BandGroup(0, 0, cin_max, cout_max)).T),
        np.ascontiguousarray(np.pad(d, ((0, 0), (0, kkp - kk))), dtype="float32"),
        np.asarray(plan.kout_sorted, dtype="int32"),
        rank,
    ]
    if bias is not None:
        out.append(np.asarray(bias, dtype="float32").reshape(-1))
    return out


def fused_pointwise_ref(
    x: np.ndarray,
    consts: Sequence[np.ndarray],
    groups: Sequence[tuple[int, int, int]],
    k: int,
    clip: tuple[float, float] | None = None,
) -> np.ndarray:
    """NumPy reference of :func:`fused_pointwise`, from its own constant arguments.

    Parameters
    ----------
    x : numpy.ndarray
        ``[N, Cin, H, W]`` input.
    consts : sequence of numpy.ndarray
        As returned by :func:`fused_constants` (with or without the trailing bias).
    groups : sequence of (size, cin_g, cout_g)
        The kernel's band groups.
    k : int
        Macroblock size.
    clip : (float, float), optional
        Output clamp.

    Returns
    -------
    numpy.ndarray
        ``[N, Cout, H, W]``.
    """
    perm, kin, d_in, wt, d_out, kout_s, rank = consts[:7]
    bias = consts[7] if len(consts) > 7 else None
    n, _, h, w = x.shape
    qtot = sum(int(size) for size, _, _ in groups)
    xf = truncated_dct_ref(x, np.broadcast_to(d_in.T[:, None, :], (d_in.shape[1], len(perm),
                                                                   k * k)), perm, k)  # fmt: skip
    xf = xf * (np.arange(xf.shape[0])[:, None] < kin[None, :])[:, :, None]  # [Qpad, cin, P]
    cout = len(kout_s)
    yf = np.zeros((qtot, cout, xf.shape[2]))  # [Q, sorted Cout, P]
    off = 0
    for size, cin_g, cout_g in groups:
        xg = xf[off : off + size, :cin_g]
        yf[off : off + size, :cout_g] = band_gemm_ref(unpack_weight(wt)[:cin_g, :cout_g].T, xg)
        off += size
    yf *= (np.arange(qtot)[:, None] < kout_s[None, :])[:, :, None]
    hp, wp = padded_size(h, k), padded_size(w, k)
    pix = np.einsum("qsp,qr->spr", yf, d_out[:, : k * k])[rank]  # [Cout (original), P, k*k]
    y = pix.reshape(cout, n, hp // k, wp // k, k, k).transpose(1, 0, 2, 4, 3, 5)
    y = y.reshape(n, cout, hp, wp)[:, :, :h, :w]
    if bias is not None:
        y = y + np.asarray(bias).reshape(1, -1, 1, 1)
    if clip is not None:
        y = np.clip(y, *clip)
    return y


# ----------------------------------------------------------------------------- references


def truncated_dct_ref(x: np.ndarray, basis: np.ndarray, perm: np.ndarray, k: int) -> np.ndarray:
    """NumPy reference of :func:`truncated_dct`.

    Parameters
    ----------
    x : numpy.ndarray
        ``[N, Cin, H, W]`` input.
    basis : numpy.ndarray
        ``[size, Cin_g, k*k]`` masked basis.
    perm : numpy.ndarray
        ``[Cin_g]`` input channel of each sorted slot.
    k : int
        Macroblock size.

    Returns
    -------
    numpy.ndarray
        ``[size, Cin_g, P]``.
    """
    n, _, h, w = x.shape
    hp, wp = padded_size(h, k), padded_size(w, k)
    xp = np.zeros((n, len(perm), hp, wp), dtype=np.float64)
    xp[:, :, :h, :w] = x[:, perm]
    blocks = xp.reshape(n, len(perm), hp // k, k, wp // k, k).transpose(1, 0, 2, 4, 3, 5)
    blocks = blocks.reshape(len(perm), -1, k * k)  # [Cin_g, P, k*k]
    return np.einsum("qcr,cpr->qcp", basis, blocks)


def band_gemm_ref(weight: np.ndarray, xf: np.ndarray) -> np.ndarray:
    """NumPy reference of :func:`band_gemm`.

    Parameters
    ----------
    weight : numpy.ndarray
        ``[Cout_g, Cin_g]``.
    xf : numpy.ndarray
        ``[size, Cin_g, P]``.

    Returns
    -------
    numpy.ndarray
        ``[size, Cout_g, P]``.
    """
    return np.einsum("oc,qcp->qop", weight.astype(np.float64), xf)


def truncated_idct_ref(
    yf: np.ndarray, basis: np.ndarray, slot: np.ndarray, k: int, n: int, h: int, w: int
) -> np.ndarray:
    """NumPy reference of :func:`truncated_idct`.

    Parameters
    ----------
    yf : numpy.ndarray
        ``[size, Cout_g, P]``.
    basis : numpy.ndarray
        ``[size, Cout, k*k]``.
    slot : numpy.ndarray
        ``[Cout]`` row of ``yf`` each output channel reads.
    k, n, h, w : int
        Block size and output shape.

    Returns
    -------
    numpy.ndarray
        ``[N, Cout, H, W]``.
    """
    hp, wp = padded_size(h, k), padded_size(w, k)
    pix = np.einsum("qor,qop->opr", basis, yf[:, slot])  # [Cout, P, k*k]
    cout = len(slot)
    y = pix.reshape(cout, n, hp // k, wp // k, k, k).transpose(1, 0, 2, 4, 3, 5)
    return y.reshape(n, cout, hp, wp)[:, :, :h, :w]


def freq_pointwise_ref(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, plan: BandPlan
) -> np.ndarray:
    """The whole layer in NumPy through the three references (DCT -> GEMMs -> IDCT).

    Parameters
    ----------
    x : numpy.ndarray
        ``[N, Cin, H, W]`` input.
    weight : numpy.ndarray
        ``[Cout, Cin(, 1, 1)]`` conv weight.
    bias : numpy.ndarray, optional
        ``[Cout]``.
    plan : BandPlan
        Masks and groups.

    Returns
    -------
    numpy.ndarray
        ``[N, Cout, H, W]``; equals ``conv1x1(x)`` with coefficients masked per channel.
    """
    n, _, h, w = x.shape
    y = np.zeros((n, len(plan.kout), h, w))
    for g in plan.groups:
        xf = truncated_dct_ref(x, dct_group_basis(plan, g), np.asarray(plan.perm_in[: g.cin]),
                               plan.k)  # fmt: skip
        yf = band_gemm_ref(group_weight(plan, weight, g), xf)
        basis, slot = idct_group_basis(plan, g)
        y += truncated_idct_ref(yf, basis, slot, plan.k, n, h, w)
    if bias is not None:
        y += np.asarray(bias).reshape(1, -1, 1, 1)
    return y
