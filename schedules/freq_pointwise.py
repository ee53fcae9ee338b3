"""Hand-written CPU schedule of the fused frequency-band pointwise kernel.

The kernel (``tvm_freq.kernels.freq_pointwise.fused_pointwise``) is written without a
schedule; this module gives it one:

* one macroblock (all channels) is the unit of work: the DCT, every band GEMM and the
  IDCT of a block run back to back (``compute_at``), so the block's coefficients stay in
  L1/L2 instead of streaming through memory between stages;
* the DCT is vectorised over coefficients (a ``k*k`` reduction per channel, unrolled);
* each band GEMM is a register-tiled micro-kernel: ``rows`` coefficient rows by
  ``col_vectors`` vectors of output channels, vectorised over output channels;
* the IDCT is vectorised along image rows (a whole block when the image is one block
  wide), with the coefficient loop unrolled so that the per-group selects fold away.

Tile sizes are arguments (``rows``, ``col_vectors``, ``lanes``); :func:`sample_knobs`
turns them into MetaSchedule decisions so that tuning searches them. Vector width is
gated by target: 16 floats with AVX-512, 8 with AVX2, 4 otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx
from tvm_freq.kernels.freq_pointwise import FUSED_KERNEL

__all__ = [
    "FusedKnobs",
    "is_fused_pointwise",
    "vector_lanes",
    "schedule_fused_pointwise",
    "sample_knobs",
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
        Most output-channel vectors per micro-kernel.
    parallel : bool
        Spread macroblocks over threads.
    """

    lanes: int = 16
    rows: int = 6
    col_vectors: int = 2
    parallel: bool = False

    def __post_init__(self) -> None:
        if self.lanes < 1 or self.rows < 1 or self.col_vectors < 1:
            raise ValueError(f"tile sizes must be >= 1, got {self}")


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
    return (
        str(attrs.get("tvm_freq.kernel", "")) == FUSED_KERNEL
        and not bool(attrs.get("tirx.is_scheduled", False))
    )


def vector_lanes(target: tvm.target.Target) -> int:
    """Float32 lanes of the widest vector unit of a CPU target.

    Parameters
    ----------
    target : tvm.target.Target
        An ``llvm`` target.

    Returns
    -------
    int
        16 with AVX-512, 8 with AVX2, 4 otherwise.
    """
    keys = {str(f) for f in (target.attrs.get("mattr") or [])}
    mcpu = str(target.attrs.get("mcpu", ""))
    if "+avx512f" in keys or "avx512" in mcpu or mcpu in {"znver4", "znver5", "sapphirerapids"}:
        return 16
    if "+avx2" in keys or mcpu in {"haswell", "broadwell", "skylake", "znver2", "znver3"}:
        return 8
    return 4


def _largest_divisor(n: int, cap: int) -> int:
    return max(d for d in range(1, max(1, min(n, cap)) + 1) if n % d == 0)


def _extent(sch: s_tir.Schedule, loop: s_tir.LoopRV) -> int:
    return int(sch.get(loop).extent)


def _block_buffer(sch: s_tir.Schedule, name: str) -> tirx.Var:
    """The buffer a block writes."""
    return sch.get(sch.get_sblock(name)).writes[0].source


def _roles(
    sch: s_tir.Schedule, block: s_tir.SBlockRV, extents: list[int]
) -> list[s_tir.LoopRV | None]:
    """Map a block's loops below the tile loops to its iteration axes.

    ``compute_at`` drops unit loops, so an axis whose extent (in the tile) is 1 has no
    loop; ``None`` stands in for it.
    """
    loops = sch.get_loops(block)[3:]  # below the b, bh, bw tile loops
    present = [e for e in extents if e != 1]
    if [_extent(sch, lp) for lp in loops] != present:
        raise s_tir.ScheduleError(f"unexpected loop nest {loops} for extents {extents}")
    it = iter(loops)
    return [next(it) if e != 1 else None for e in extents]


def _shapes(func: tvm.tirx.PrimFunc) -> tuple[int, int, int, int]:
    """``k, h, w`` and the number of band groups, read from the kernel's signature."""
    k = int(func.attrs["tvm_freq.k"])
    h, w = (int(d) for d in func.params[-1].shape[2:])  # params are the buffers here
    groups = sum(1 for p in func.params if p.name.startswith("W"))
    return k, h, w, groups


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
    rows, col_vectors : list, optional
        Per-group overrides (ints or MetaSchedule ``ExprRV`` decisions), one per group.
    """
    func = sch.mod["main"]
    k, h, w, num_groups = _shapes(func)
    exact = h % k == 0 and w % k == 0
    one_block_wide = -(-w // k) == 1

    idct = sch.get_sblock("idct")
    try:
        epilogue = sch.get_sblock("epilogue")
    except s_tir.ScheduleError:  # built without bias or clip: stage the output ourselves
        epilogue = sch.cache_write(idct, 0, "global")
    b, o, yy, xx, q = sch.get_loops(idct)
    bh, i = sch.split(yy, [None, k])
    bw, j = sch.split(xx, [None, k])
    # The IDCT of one block writes a k*k tile that is contiguous once compacted, so it is
    # vectorised over the whole block; the epilogue then writes the tile's k rows into
    # the image (or, one block wide, the block is already contiguous image rows).
    sch.reorder(b, bh, bw, o, q, i, j)
    inner = sch.fuse(i, j)
    for g in range(num_groups):
        sch.compute_at(sch.get_sblock(f"gemm{g}"), bw)
    sch.compute_at(sch.get_sblock("dct"), bw)
    if exact:
        sch.vectorize(inner)
    sch.unroll(q)
    sch.reverse_compute_at(epilogue, o)
    loops = sch.get_loops(epilogue)
    if exact:
        sch.vectorize(sch.fuse(*loops[-2:]) if one_block_wide else loops[-1])
    to_decompose = [(idct, q)]

    for g in range(num_groups):
        gemm = sch.get_sblock(f"gemm{g}")
        size, cout_g = (int(d) for d in _block_buffer(sch, f"gemm{g}").shape[1:])
        cin_g = int(func.params[3 + g].shape[0])
        p_, q_, o_, c_ = _roles(sch, gemm, [1, size, cout_g, cin_g])
        m = sch.fuse(p_, q_) if p_ is not None and q_ is not None else p_ or q_
        if c_ is None:  # a one-channel reduction: nothing worth tiling
            continue
        outer, inner = [], []
        if o_ is not None:
            lanes = _largest_divisor(cout_g, knobs.lanes)
            cv = col_vectors[g] if col_vectors is not None else _largest_divisor(
                cout_g // lanes, knobs.col_vectors)  # fmt: skip
            o0, o1, ov = sch.split(o_, [None, cv, lanes])
            outer.append(o0)
            inner += [o1, ov]
        if m is not None:
            r = rows[g] if rows is not None else _largest_divisor(_extent(sch, m), knobs.rows)
            m0, m1 = sch.split(m, [None, r])
            outer.append(m0)
            inner.insert(0, m1)
            sch.unroll(m1)
        # Micro-kernel: for each input channel, rows x col_vectors FMAs on vectors of
        # output channels, with the accumulators in registers.
        sch.reorder(*outer, c_, *inner)
        if o_ is not None:
            sch.vectorize(ov)
            sch.unroll(o1)
        to_decompose.append((gemm, c_))

    dct = sch.get_sblock("dct")
    cin_max, qtot = int(func.params[1].shape[0]), int(func.params[2].shape[2])
    c_, p_, q_, r_ = _roles(sch, dct, [cin_max, 1, qtot, k * k])
    if r_ is not None:
        if q_ is not None:
            sch.reorder(r_, q_)
            sch.vectorize(q_)
        sch.unroll(r_)
        to_decompose.append((dct, r_))
    if knobs.parallel:
        sch.parallel(sch.fuse(b, bh, bw))
    # Reductions are split into init + update last: vectorize and parallel need whole
    # reduction blocks.
    for block, loop in to_decompose:
        sch.decompose_reduction(block, loop)


def sample_knobs(sch: s_tir.Schedule, lanes: int = 16) -> None:
    """MetaSchedule design space: sample each group's GEMM tile, then schedule.

    Use as ``ms.space_generator.ScheduleFn(lambda s: sample_knobs(s, lanes))``; the
    sampled decisions are what tuning searches and what records replay.

    Parameters
    ----------
    sch : tvm.s_tir.Schedule
        Schedule of a fused kernel.
    lanes : int
        Vector width of the target.
    """
    func = sch.mod["main"]
    rows, cols = [], []
    for g in range(_shapes(func)[3]):
        cout_g = int(func.params[3 + g].shape[1])
        size = int(_block_buffer(sch, f"gemm{g}").shape[1])
        row_opts = [d for d in range(1, min(size, 8) + 1) if size % d == 0]
        n_vec = max(1, cout_g // lanes if cout_g % lanes == 0 else 1)
        col_opts = [d for d in range(1, min(n_vec, 4) + 1) if n_vec % d == 0]
        rows.append(sch.sample_categorical(row_opts, [1.0 / len(row_opts)] * len(row_opts)))
        cols.append(sch.sample_categorical(col_opts, [1.0 / len(col_opts)] * len(col_opts)))
    schedule_fused_pointwise(sch, FusedKnobs(lanes=lanes), rows=rows, col_vectors=cols)


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
    cores = int(target.attrs.get("num-cores", 1) or 1)
    schedule_fused_pointwise(sch, FusedKnobs(lanes=vector_lanes(target), parallel=cores > 1))
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)
