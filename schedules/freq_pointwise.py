"""Hand-written CPU schedule of the fused frequency-band pointwise kernel.

The kernel (``tvm_freq.kernels.freq_pointwise.fused_pointwise``) is written without a
schedule; this module gives it one:

* a tile of macroblocks (all channels) is the unit of work: the DCT, every band GEMM and
  the IDCT of a tile run back to back (``compute_at``), so its coefficients stay in
  L1/L2 instead of streaming through memory between stages;
* the DCT of each input run is vectorised over the run's coefficients (a ``k*k``
  reduction per channel, unrolled);
* each output run is computed strip by strip of output channels: every group's GEMM for
  the strip, then its masking and IDCT, so a strip of weights is read once for all
  groups; each GEMM is a register-tiled micro-kernel of ``rows`` coefficient rows by
  ``col_vectors`` vectors of output channels;
* the IDCT is vectorised along image rows (a whole block when the image is one block
  wide), with the coefficient loop unrolled so that the per-group selects fold away.

Tile sizes are arguments (``rows``, ``col_vectors``, ``lanes``). :func:`knobs_for` picks
them for a target (vector width gated by target: 16 floats with AVX-512, 8 with AVX2, 4
otherwise; parallel when the target has several cores); :func:`default_schedule` applies
them, and :func:`sample_knobs` / :func:`design_space` turn the GEMM tiles into
MetaSchedule decisions so that tuning searches them.

Every stage, parameter and attribute name used here is declared by the kernel module.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import meta_schedule as ms
from tvm_freq.kernels.freq_pointwise import (
    ATTR_GEMMS,
    ATTR_IN_CHUNKS,
    ATTR_K,
    ATTR_KERNEL,
    ATTR_OUT_CHUNKS,
    COUT_ALIGN,
    FUSED_KERNEL,
    PARAM_DCT_BASIS,
    PARAM_IDCT_BASIS,
    PARAM_PERM,
    STAGE_DCT,
    STAGE_EPILOGUE,
    dct_raw_stage,
    freq_out_stage,
    gemm_stage,
    idct_stage,
)

from tvm_freq.dct import block_grid
from tvm_freq.target import vector_lanes

__all__ = [
    "FusedKnobs",
    "is_fused_pointwise",
    "knobs_for",
    "vector_lanes",
    "schedule_fused_pointwise",
    "sample_knobs",
    "design_space",
    "default_schedule",
]


@dataclass(frozen=True)
class FusedKnobs:
    """Tile sizes of the fused kernel's schedule.

    Parameters
    ----------
    lanes : int
        Vector width in floats (output channels per GEMM vector).
    rows : int
        Most GEMM rows (block x coefficient) per micro-kernel; the largest divisor of
        the group's rows up to this is used.
    col_vectors : int
        Most output-channel vectors per strip (and per GEMM micro-kernel): each output
        run is computed one strip at a time.
    dct_channels, idct_channels : int
        Channels per DCT / IDCT micro-kernel (the largest divisor up to this is used).
    tile : {"auto", "block", "row", "image"}
        Unit of work: one macroblock, one row of macroblocks, or a whole image. Bigger
        tiles read each weight matrix fewer times but keep more in cache; ``auto`` takes
        the biggest whose intermediates fit in :data:`TILE_BYTES`.
    parallel : bool
        Spread macroblocks over threads.
    """

    lanes: int = 16
    rows: int = 12
    col_vectors: int = 2
    dct_channels: int = 4
    idct_channels: int = 4
    tile: str = "auto"
    parallel: bool = False

    def __post_init__(self) -> None:
        if self.tile not in ("auto", "block", "row", "image"):
            raise ValueError(f"tile must be auto, block, row or image, got {self.tile!r}")
        sizes = (self.lanes, self.rows, self.col_vectors, self.dct_channels, self.idct_channels)
        if min(sizes) < 1:
            raise ValueError(f"tile sizes must be >= 1, got {self}")


#: Cache budget for one tile's intermediates (DCT coefficients and IDCT blocks) with
#: ``tile="auto"``: half of a 1 MiB L2, leaving room for the weights.
TILE_BYTES = 512 * 1024


def is_fused_pointwise(func: tvm.tirx.PrimFunc) -> bool:
    """Whether ``func`` is an (unscheduled) fused frequency-band kernel.

    Parameters
    ----------
    func : tvm.tirx.PrimFunc
        Any PrimFunc.

    Returns
    -------
    bool
        True for kernels from ``fused_pointwise`` that carry no schedule yet.
    """
    attrs = func.attrs or {}
    return str(attrs.get(ATTR_KERNEL, "")) == FUSED_KERNEL and not bool(
        attrs.get("tirx.is_scheduled", False)
    )


def knobs_for(target: tvm.target.Target) -> FusedKnobs:
    """The schedule's knobs for a target: the default schedule and the tuning space both
    start from these.

    Parameters
    ----------
    target : tvm.target.Target
        CPU target; its vector width (:func:`tvm_freq.target.vector_lanes`) and
        ``num-cores`` pick lanes, GEMM rows and parallelism.

    Returns
    -------
    FusedKnobs
        Frozen knobs.
    """
    cores = int(target.attrs.get("num-cores", 1) or 1)
    # Vectors over a GEMM's output channels must divide the kernel's channel alignment.
    lanes = min(vector_lanes(target), COUT_ALIGN)
    # rows x col_vectors accumulators: 24 of AVX-512's 32 registers, 12 of AVX2's 16.
    return FusedKnobs(lanes=lanes, rows=12 if lanes >= 16 else 6, parallel=cores > 1)


def _largest_divisor(n: int, cap: int) -> int:
    return max(d for d in range(1, max(1, min(n, cap)) + 1) if n % d == 0)


def _pow2_lanes(n: int, cap: int) -> int:
    """The largest power of two up to ``cap`` that divides ``n``: vectors of other widths
    (40, 48 floats) make LLVM keep the accumulators in memory, 3-4x slower."""
    v = 1
    while v * 2 <= cap and n % (v * 2) == 0:
        v *= 2
    return v


def _vectorize(sch: s_tir.Schedule, loop: s_tir.LoopRV, lanes: int) -> list[s_tir.LoopRV]:
    """Vectorise ``loop`` in whole machine vectors; returns ``[outer, vector]`` loops."""
    v = _pow2_lanes(_extent(sch, loop), lanes)
    outer, inner = sch.split(loop, [None, v])
    sch.unroll(outer)
    if v > 1:
        sch.vectorize(inner)
    return [outer, inner]


def _gemm_rows(m: int, cap: int) -> int:
    """GEMM rows per micro-kernel: a divisor of ``m`` when a good one exists; otherwise
    ``cap`` with a guarded tail (a prime number of coefficient rows would else run one row
    at a time, a third of the speed)."""
    d = _largest_divisor(m, cap)
    return d if d * 2 > cap or d == m else min(cap, m)


#: Independent accumulators a transform micro-kernel aims for: enough to cover the FMA
#: latency on two FMA ports (8), few enough to stay in AVX-512's 32 registers.
TRANSFORM_ACCUMULATORS = (8, 24)


def _transform_tile(channels: int, blocks: int, vectors: int, max_channels: int) -> tuple[int, int]:
    """Channels and blocks per transform micro-kernel (divisors of the extents).

    Each (channel, block) pair holds ``vectors`` accumulators. Of the pairs with at most
    ``max_channels`` channels and at most :data:`TRANSFORM_ACCUMULATORS`'s upper bound
    of accumulators, take the smallest that reaches its lower bound (more channels
    first), else the largest.
    """
    lo, hi = TRANSFORM_ACCUMULATORS
    options = [
        (cu, pu)
        for cu in range(1, min(channels, max_channels) + 1)
        if channels % cu == 0
        for pu in range(1, blocks + 1)
        if blocks % pu == 0 and cu * pu * vectors <= max(hi, vectors)
    ]
    enough = [o for o in options if o[0] * o[1] * vectors >= lo]
    if enough:
        return min(enough, key=lambda o: (o[0] * o[1], -o[0]))
    return max(options, key=lambda o: (o[0] * o[1], o[0]))


def _partition(sch: s_tir.Schedule, loop: s_tir.LoopRV, bounds: list[int], extent: int) -> list:
    """Partition a channel loop at the chunk bounds (``[lo0, hi0, ...]``), one loop each;
    returns the loops, or ``[]`` when there is a single chunk."""
    cuts = sorted({0, extent, *(b for b in bounds if 0 < b < extent)})
    sizes = [b - a for a, b in zip(cuts, cuts[1:], strict=False)]
    if len(sizes) > 1:
        return sch.loop_partition(loop, sizes[:-1])  # the last part is what remains
    return []


def _extent(sch: s_tir.Schedule, loop: s_tir.LoopRV) -> int:
    return int(sch.get(loop).extent)


def _block_buffer(sch: s_tir.Schedule, name: str) -> tirx.Var:
    """The buffer a block writes."""
    return sch.get(sch.get_sblock(name)).writes[0].source


def _param(func: tvm.tirx.PrimFunc, name: str) -> tirx.Var:
    """The kernel parameter (a buffer) called ``name``."""
    return next(p for p in func.params if p.name == name)


def _annotate_read(sch: s_tir.Schedule, block: s_tir.SBlockRV, index: int, fn: object) -> None:
    """``Schedule.annotate_buffer_access`` for a read region of a buffer whose rank differs
    from the block's iteration count (the Python wrapper of 0.27 insists they match)."""
    from tvm.s_tir.schedule import _ffi_api
    from tvm.tirx import IndexMap

    iter_vars = [iv.var for iv in sch.get(block).iter_vars]
    index_map = IndexMap(initial_indices=iter_vars, final_indices=fn(*iter_vars),
                         inverse_index_map=None)  # fmt: skip
    _ffi_api.ScheduleAnnotateBufferAccess(sch, block, index, 0, index_map)


def _roles(
    sch: s_tir.Schedule, block: s_tir.SBlockRV, extents: list[int], outer: int
) -> list[s_tir.LoopRV | None]:
    """Map a block's loops below the tile loops to its iteration axes.

    ``compute_at`` drops unit loops, so an axis whose extent (in the tile) is 1 has no
    loop; ``None`` stands in for it.
    """
    loops = sch.get_loops(block)[outer:]  # below the tile loops
    present = [e for e in extents if e != 1]
    if [_extent(sch, lp) for lp in loops] != present:
        found = [_extent(sch, lp) for lp in loops]
        raise s_tir.ScheduleError(f"unexpected loop nest {found} for extents {extents}")
    it = iter(loops)
    return [next(it) if e != 1 else None for e in extents]


def _shapes(func: tvm.tirx.PrimFunc) -> tuple[int, int, int]:
    """``k, h, w``, read from the kernel's signature."""
    k = int(func.attrs[ATTR_K])
    h, w = (int(d) for d in func.params[-1].shape[2:])  # params are the buffers here
    return k, h, w


def schedule_fused_pointwise(
    sch: s_tir.Schedule,
    knobs: FusedKnobs = FusedKnobs(),
    *,
    rows: object = None,
    col_vectors: object = None,
) -> None:
    """Schedule a fused frequency-band kernel in place.

    Parameters
    ----------
    sch : tvm.s_tir.Schedule
        Schedule of a module whose ``main`` is a ``fused_pointwise`` kernel.
    knobs : FusedKnobs
        Tile sizes.
    rows : list, optional
        GEMM rows per micro-kernel (ints or MetaSchedule ``ExprRV`` decisions), one per
        GEMM stage in ``attrs[ATTR_GEMMS]`` order.
    col_vectors : list, optional
        Output-channel vectors per strip, one per output run.
    """
    func = sch.mod["main"]
    k, h, w = _shapes(func)
    exact = h % k == 0 and w % k == 0
    one_block_wide = -(-w // k) == 1

    cout = int(func.params[-1].shape[1])
    qpad = int(_param(func, PARAM_DCT_BASIS).shape[1])
    # The epilogue drives the loop nest: one macroblock (all channels) per iteration.
    epilogue = sch.get_sblock(STAGE_EPILOGUE)
    b, o, yy, xx = sch.get_loops(epilogue)
    bh, i = sch.split(yy, [None, k])
    bw, j = sch.split(xx, [None, k])
    cin_max = int(_param(func, PARAM_PERM).shape[0])
    kkp = int(_param(func, PARAM_IDCT_BASIS).shape[1])
    nbh, nbw = block_grid(h, w, k)
    tile = knobs.tile
    if tile == "auto":
        per_block = 4 * (cin_max * qpad + cout * kkp + cin_max * k * k)
        tile = ("image" if nbh * nbw * per_block <= TILE_BYTES
                else "row" if nbw * per_block <= TILE_BYTES else "block")  # fmt: skip
        if knobs.parallel and tile == "image" and int(func.params[0].shape[0]) == 1:
            tile = "row"  # one image: rows are the parallel work
    # Below the tile loop, write whole image rows of one channel at a time: block by
    # block, a block's k-float rows of every channel land in half-written cache lines
    # that are evicted before the next block completes them (a third of the kernel's
    # time on 56x56 maps, measured).
    # One block wide, a block is a contiguous part of its channel plane already.
    rows_first = tile != "block" and not one_block_wide
    orders = {
        "block": (b, bh, bw, o, i, j),
        "row": (b, bh, o, i, bw, j) if rows_first else (b, bh, bw, o, i, j),
        "image": (b, o, bh, i, bw, j) if rows_first else (b, o, bh, bw, i, j),
    }
    sch.reorder(*orders[tile])
    if exact:  # a block's rows are contiguous image rows; one block wide, the whole block
        if one_block_wide and (k * k) & (k * k - 1):
            # 49 lanes: LLVM built each channel's bias splat from 24 scalar inserts;
            # 7-lane rows broadcast it in one instruction (docs/compiler.md, pitfall 6).
            sch.vectorize(j)
            sch.unroll(i)
        else:
            sch.vectorize(sch.fuse(i, j) if one_block_wide else j)
    at, outer, pt = {"block": (bw, 3, 1), "row": (bh, 2, nbw), "image": (b, 1, nbh * nbw)}[tile]
    # Producers run per block, consumers first. The IDCT computes its padded pixel
    # vectors in full (the epilogue reads only the real pixels: declare it reads all).
    reads = [r.source.name for r in sch.get(epilogue).reads]

    def block_of(vb, vo, vy, vx, size):
        blk = (vb * nbh + vy // k) * nbw + vx // k
        return [blk, blk + 1, 0, size, 0, kkp]

    in_bounds = [int(b) for b in func.attrs[ATTR_IN_CHUNKS]]
    out_bounds = [int(b) for b in func.attrs[ATTR_OUT_CHUNKS]]
    n_in, n_out = len(in_bounds) // 2, len(out_bounds) // 2
    for j in range(n_out):
        size = int(_block_buffer(sch, idct_stage(j)).shape[1])
        _annotate_read(
            sch,
            epilogue,
            reads.index(idct_stage(j)),
            lambda vb, vo, vy, vx, size=size: block_of(vb, vo, vy, vx, size),
        )
    pairs = [int(x) for x in func.attrs[ATTR_GEMMS]]
    pairs = list(zip(pairs[0::2], pairs[1::2], strict=True))
    placed = []
    strips: list[s_tir.LoopRV] = []  # each output run's strip loop
    for j in range(n_out):
        # One strip of a run's output channels at a time: the GEMMs of every group for the
        # strip, then its masking and IDCT, so the strip of weights is read once for all
        # groups and the strip's coefficients stay in L1.
        idct = sch.get_sblock(idct_stage(j))
        sch.compute_at(idct, at)
        size, need = (int(d) for d in _block_buffer(sch, freq_out_stage(j)).shape[1:])
        lanes = _pow2_lanes(size, knobs.lanes)
        cv = col_vectors[j] if col_vectors is not None else _largest_divisor(
            size // lanes, knobs.col_vectors)  # fmt: skip
        p_, s_, ij, q = _roles(sch, idct, [pt, size, kkp, need], outer)
        here, where = outer, at
        cv_value = cv if isinstance(cv, int) else int(sch.get(cv))  # a sampled decision
        if s_ is not None:
            where, s1, s2 = sch.split(s_, [None, cv, lanes])  # the strip loop
            strips.append(where)
            s_ = sch.fuse(s1, s2)
            if p_ is not None:
                sch.reorder(where, p_)
            here = outer + 1
        sch.compute_at(sch.get_sblock(freq_out_stage(j)), where)
        for g, jj in pairs:
            if jj == j:
                sch.compute_at(sch.get_sblock(gemm_stage(g, j)), where)
        placed.append((size, need, lanes, min(size, cv_value * lanes), here))
    # Let the DCT compute its padded coefficient vectors in full: the GEMMs read only the
    # live coefficients, so declare that the first one reads them all.
    gemm0 = sch.get_sblock(gemm_stage(*pairs[0]))
    reads = [r.source.name for r in sch.get(gemm0).reads]
    _annotate_read(sch, gemm0, reads.index(STAGE_DCT),
                   lambda vb, vq, vo, vc: [vc, vc + 1, vb, vb + 1, 0, qpad])  # fmt: skip
    sch.compute_at(sch.get_sblock(STAGE_DCT), at)
    for j in range(n_in):
        sch.compute_at(sch.get_sblock(dct_raw_stage(j)), at)

    to_decompose = []
    for j, (_, need, lanes, width, here) in enumerate(placed):
        idct = sch.get_sblock(idct_stage(j))
        # IDCT micro-kernel: a few (sorted) output channels at a time, each accumulating
        # its k*k block, vectorised whole, over a rolled coefficient loop. Unrolling the
        # coefficients would make the shared basis loop-invariant over the channels, and
        # LLVM would hoist all of it into (spilled) registers.
        p_, s_, ij, q = _roles(sch, idct, [pt, width, kkp, need], here)
        if s_ is not None and ij is not None and q is not None:
            su, pu = _transform_tile(width, pt, -(-kkp // _pow2_lanes(kkp, knobs.lanes)),
                                     knobs.idct_channels)  # fmt: skip
            s0, s1 = sch.split(s_, [None, su])
            p0, p1 = sch.split(p_, [None, pu]) if p_ is not None else (None, None)
            sch.reorder(*[x for x in (p0, s0, q, p1, s1) if x is not None], ij)
            for x in (p1, s1):
                if x is not None:
                    sch.unroll(x)
            _vectorize(sch, ij, knobs.lanes)
            to_decompose.append((idct, q))
        # Output masks and un-grouping: channels vectorised, coefficients rolled. Unrolled,
        # every read of the strip's GEMM outputs had a constant index, so LLVM kept them
        # in registers from the GEMMs to here, across the later groups' GEMMs and calls:
        # the GEMM loops then kept their accumulators on the stack (pitfall 5).
        p_, s_, q = _roles(sch, sch.get_sblock(freq_out_stage(j)), [pt, width, need], here)
        if s_ is not None and q is not None:
            sch.reorder(q, s_)
            _, sv = sch.split(s_, [None, lanes])
            if lanes > 1:
                sch.vectorize(sv)
        for n, (g, jj) in enumerate(pairs):
            if jj != j:
                continue
            gemm = sch.get_sblock(gemm_stage(g, j))
            gsize, gwidth = (int(d) for d in _block_buffer(sch, gemm_stage(g, j)).shape[1:])
            cin_g = int(sch.get(gemm).iter_vars[3].dom.extent)
            p_, q_, o_, c_ = _roles(sch, gemm, [pt, gsize, min(gwidth, width), cin_g], here)
            m = sch.fuse(p_, q_) if p_ is not None and q_ is not None else p_ or q_
            if c_ is None:  # a one-channel reduction: nothing worth tiling
                continue
            inner = []
            if o_ is not None:
                o1, ov = sch.split(o_, [None, _pow2_lanes(min(gwidth, width), lanes)])
                inner += [o1, ov]
            if m is not None:
                r = rows[n] if rows is not None else _gemm_rows(_extent(sch, m), knobs.rows)
                m0, m1 = sch.split(m, [None, r])
                inner.insert(0, m1)
                sch.unroll(m1)
                # Micro-kernel: for each input channel, rows x col_vectors FMAs on vectors
                # of output channels, with the accumulators in registers.
                sch.reorder(m0, c_, *inner)
            else:
                sch.reorder(c_, *inner)
            if o_ is not None:
                sch.vectorize(inner[-1])
                sch.unroll(inner[-2])
            to_decompose.append((gemm, c_))
    # The masking stage: elementwise over the tile's coefficients.
    # One loop per input run; each run reads its DCT through min(q, need_j - 1), which made
    # every vector of coefficients a gather. Vectorise only q < need_j, where the clamp
    # folds away; the rest (zeros after the masks, never read) stays a scalar loop.
    c_, p_, q_ = _roles(sch, sch.get_sblock(STAGE_DCT), [cin_max, pt, qpad], outer)
    if c_ is not None and q_ is not None:
        parts = _partition(sch, c_, in_bounds, cin_max) or [c_]
        if len(parts) != n_in:  # the runs tile [0, cin_max) in order (channel_chunks)
            raise s_tir.ScheduleError(f"{len(parts)} channel loops for {n_in} input runs")
        for j, part in enumerate(parts):
            qj = int(_block_buffer(sch, dct_raw_stage(j)).shape[2])
            q_loop = sch.get_loops(sch.get_child_blocks(part)[0])[-1]
            head = sch.loop_partition(q_loop, [qj])[0] if qj < qpad else q_loop
            _vectorize(sch, head, knobs.lanes)
    elif q_ is not None:
        _vectorize(sch, q_, knobs.lanes)
    dct_channels: list[s_tir.LoopRV] = []  # each input run's outer channel loop
    for j in range(n_in):
        dct = sch.get_sblock(dct_raw_stage(j))
        size, _, qj = (int(d) for d in _block_buffer(sch, dct_raw_stage(j)).shape)
        c_, p_, q_, r_ = _roles(sch, dct, [size, pt, qj, k * k], outer)
        if r_ is None:
            continue
        # DCT micro-kernel: a few channels of a few blocks at a time, coefficients
        # vectorised, the block's pixels rolled by rows (so the basis row in use is
        # reloaded, not hoisted). Channels x blocks x coefficient vectors independent
        # accumulators hide the FMA latency: one channel of one block with one vector
        # ran at a quarter of the FMA rate.
        cu, pu = _transform_tile(size, pt, -(-qj // _pow2_lanes(qj, knobs.lanes)),
                                 knobs.dct_channels)  # fmt: skip
        c0, c1 = sch.split(c_, [None, cu]) if c_ is not None else (None, None)
        p0, p1 = sch.split(p_, [None, pu]) if p_ is not None else (None, None)
        ri, rj = sch.split(r_, [None, k])
        sch.reorder(*[x for x in (c0, p0, ri, rj, c1, p1, q_) if x is not None])
        if c0 is not None:
            dct_channels.append(c0)
        for x in (c1, p1):
            if x is not None:
                sch.unroll(x)
        sch.unroll(rj)
        if q_ is not None:
            _vectorize(sch, q_, knobs.lanes)
        to_decompose.append((dct, ri))
    if knobs.parallel:
        tiles = sch.fuse(*{"block": (b, bh, bw), "row": (b, bh), "image": (b,)}[tile])
        if _extent(sch, tiles) > 1:
            sch.parallel(tiles)
        else:
            # One tile (one image of one block, e.g. 7x7 at k=7): spread each stage over
            # channels instead: every input run's DCT, every output run's strips of
            # output channels, and the epilogue's channels (`o`): at two threads, 0.85x
            # the time of the strips alone over the 7x7 layers (docs/results/threads).
            for loop in [*dct_channels, *strips, o]:
                if _extent(sch, loop) > 1:
                    sch.parallel(loop)
    # Reductions are split into init + update last: vectorize and parallel need whole
    # reduction blocks.
    for block, loop in to_decompose:
        sch.decompose_reduction(block, loop)


#: Most GEMM rows and output-channel vectors per micro-kernel that tuning samples.
_SAMPLED_ROWS, _SAMPLED_COL_VECTORS = 12, 4


def sample_knobs(sch: s_tir.Schedule, lanes: int = 16, *, knobs: FusedKnobs | None = None) -> None:
    """MetaSchedule design space: sample each group's GEMM tile, then schedule.

    Use :func:`design_space` (or ``ms.space_generator.ScheduleFn(lambda s:
    sample_knobs(s, knobs=knobs_for(target)))``); the sampled decisions are what tuning
    searches and what records replay.

    Parameters
    ----------
    sch : tvm.s_tir.Schedule
        Schedule of a fused kernel.
    lanes : int
        Vector width, when ``knobs`` is not given (other knobs at their defaults).
    knobs : FusedKnobs, optional
        The target's knobs (:func:`knobs_for`): everything but the sampled GEMM tiles,
        parallelism included, comes from them.
    """
    knobs = knobs if knobs is not None else FusedKnobs(lanes=lanes)
    func = sch.mod["main"]
    pairs = [int(x) for x in func.attrs[ATTR_GEMMS]]
    rows, cols = [], []
    for g, j in zip(pairs[0::2], pairs[1::2], strict=True):
        size = int(_block_buffer(sch, gemm_stage(g, j)).shape[1])
        row_opts = [d for d in range(1, min(size, _SAMPLED_ROWS) + 1) if size % d == 0]
        rows.append(sch.sample_categorical(row_opts, [1.0 / len(row_opts)] * len(row_opts)))
    for j in range(len(func.attrs[ATTR_OUT_CHUNKS]) // 2):
        width = int(_block_buffer(sch, freq_out_stage(j)).shape[1])
        n_vec = width // _pow2_lanes(width, knobs.lanes)  # as the schedule splits it
        col_opts = [d for d in range(1, min(n_vec, _SAMPLED_COL_VECTORS) + 1) if n_vec % d == 0]
        cols.append(sch.sample_categorical(col_opts, [1.0 / len(col_opts)] * len(col_opts)))
    schedule_fused_pointwise(sch, knobs, rows=rows, col_vectors=cols)


def design_space(target: tvm.target.Target) -> ms.space_generator.ScheduleFn:
    """The MetaSchedule design space of fused kernels for ``target``.

    The hand-written schedule is the whole space, with :func:`knobs_for`'s knobs and the
    GEMM tiles as decisions (MetaSchedule's generic rules cannot schedule a multi-stage
    kernel, so there are no schedule rules, postprocessors or mutators).

    Parameters
    ----------
    target : tvm.target.Target
        CPU target.

    Returns
    -------
    tvm.s_tir.meta_schedule.space_generator.ScheduleFn
        The space generator.
    """
    knobs = knobs_for(target)  # rows and col_vectors are sampled per group
    return ms.space_generator.ScheduleFn(
        lambda sch: sample_knobs(sch, knobs=knobs), sch_rules=[], postprocs=[], mutator_probs={}
    )


def default_schedule(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> tvm.tirx.PrimFunc:
    """Apply the default schedule for ``target`` to a fused kernel.

    Parameters
    ----------
    func : tvm.tirx.PrimFunc
        A ``fused_pointwise`` kernel.
    target : tvm.target.Target
        CPU target; its vector width and ``num-cores`` pick lanes and parallelism.

    Returns
    -------
    tvm.tirx.PrimFunc
        The scheduled kernel, marked ``tirx.is_scheduled``.
    """
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    schedule_fused_pointwise(sch, knobs_for(target))
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)
