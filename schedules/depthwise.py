"""Default schedule of depthwise kxk convs (NCHW), stride 1 and 2.

Per channel the padded plane is built once, then each step accumulates the ``k x k``
taps in registers for several output rows, on vectors of output columns. With stride 2
the plane's columns are stored by phase (even, odd), so each tap reads contiguous
vectors. See ``docs/compiler.md``.
"""

from __future__ import annotations

from tvm import s_tir
from tvm_freq.schedules.conv_common import (
    DEPTHWISE_BLOCK,
    PAD_BLOCK,
    ConvKnobs,
    _epilogue,
    _largest_divisor,
    _pow2_divisor,
    _shape,
    _tile_loops,
)

__all__ = ["DEPTHWISE_DIVISOR_FLOATS", "DEPTHWISE_ROW_FLOATS", "schedule_depthwise"]

# Widest depthwise output vector, in floats, for a whole row, and for a divisor of one
# (see _depthwise_lanes): three AVX-512 registers, one.
DEPTHWISE_ROW_FLOATS = 48
DEPTHWISE_DIVISOR_FLOATS = 16


def _depthwise_lanes(width: int, knobs: ConvKnobs) -> int:
    """Output columns per depthwise vector; each accumulates all k x k taps in registers.

    Vectors divide the row (no predicated tail): power-of-two widths where 8 or more
    divide it, else the whole row as one vector when it is at most
    :data:`DEPTHWISE_ROW_FLOATS` wide (7, 14, 17, 28, 33), else the widest divisor up to
    :data:`DEPTHWISE_DIVISOR_FLOATS` (13 of 65 and 130). The bounds are in floats, not
    machine vectors: capped at AVX2's 8 lanes, 33-wide rows got 3-lane vectors and 65-wide
    ones 5-lane vectors, 7.5x and 1.15-1.65x slower on EfficientNet-Lite2's layers than
    these multi-register ones (``benchmarks/bench_layer.py --baseline``,
    ``docs/results/avx2/layers-efficientnet-lite2-260-vs-104263f.md``).
    """
    lanes = _pow2_divisor(width, knobs.lanes)
    if lanes < 8:  # one wide vector beats narrow ones
        lanes = (width if width <= DEPTHWISE_ROW_FLOATS
                 else _largest_divisor(width, DEPTHWISE_DIVISOR_FLOATS))  # fmt: skip
    return lanes


def _depthwise_rows(height: int, stride: int) -> int:
    """Output rows one depthwise step computes, each tap's loop over them innermost.

    An input row loaded for one output row then serves the next ones (rows ``r`` and
    ``r + 1`` share ``k - 1`` input rows), so loads no longer match FMAs one for one:
    4 rows where 4 divides the height, else a divisor from 5 to 7 (7x7 and 14x14 maps).
    Otherwise stride 1 still takes 4, the last step predicated (17x17 and 9x9 maps: 1.4x
    faster than one row at a time); stride 2 shares fewer rows and takes a divisor.
    Measured standalone on MobileNetV2 and EfficientNet-Lite2 shapes; 6 rows of 3
    vectors spilled.
    """
    if height % 4 == 0:
        return 4
    d = _largest_divisor(height, 7)
    if d >= 5:
        return d
    return min(4, height) if stride == 1 else d


def _interior(sch: s_tir.Schedule, loop: s_tir.LoopRV, lo: int, hi: int) -> s_tir.LoopRV | None:
    """Partition ``loop`` at ``lo`` and ``hi`` (those inside it); return the part in between."""
    extent = int(sch.get(loop).extent)
    hi = min(hi, extent)
    if not 0 <= lo < hi:
        return None
    cuts = ([lo] if lo else []) + ([hi - lo] if hi < extent else [])
    if not cuts:
        return loop
    return sch.loop_partition(loop, cuts)[1 if lo else 0]


# Shortest phase row (padded width / stride) whose copy is partitioned and unrolled: on
# shorter rows (MobileNetV2's 576-channel 14x14 stride-2 conv: 8-wide phases) that copy
# measured 8x slower than the plain loop, on longer ones 1.4-1.6x faster.
MIN_PARTITIONED_PHASE = 12


def _copy_padded_plane(sch: s_tir.Schedule, pad: s_tir.SBlockRV, stride: int, left: int) -> None:
    """Copy a channel's padded plane, its interior free of bound checks.

    The loops are partitioned at the border rows and columns, so that the interior's
    checks simplify away and LLVM's loop vectoriser makes each interior row a run of
    plain vector loads and stores (with the checks in, TVM vectorised a select over a
    predicated loop: 2x slower at 56x56). With stride 2 the copy runs in the stored
    order, ``[.., x // s, x % s]``, phases unrolled: contiguous stores per phase, and
    loads that LLVM turns into wide loads and shuffles; phases shorter than
    :data:`MIN_PARTITIONED_PHASE` are copied by the plain loop. (``decompose_padding``
    would split the zero fill off, but MetaSchedule cannot print its traces in this TVM.)
    """
    (*_, rows, cols) = _shape(sch.get(pad).reads[0].source)
    top = (_shape(sch.get(pad).writes[0].source)[2] - rows) // 2
    loops = sch.get_loops(pad)
    h = loops[-3] if stride > 1 else loops[-2]
    if stride > 1:
        if int(sch.get(loops[-2]).extent) < MIN_PARTITIONED_PHASE:
            return  # short phase rows: the plain copy is fastest
        sch.unroll(loops[-1])
    middle = _interior(sch, h, top, top + rows)
    if middle is not None:
        (inner,) = sch.get_child_blocks(middle)
        col = sch.get_loops(inner)[-2 if stride > 1 else -1]
        _interior(sch, col, -(-left // stride), (cols + left) // stride)


def schedule_depthwise(
    sch: s_tir.Schedule, knobs: ConvKnobs = ConvKnobs(), rows: int | None = None
) -> None:
    """Schedule a legalised depthwise conv (with its fused epilogue) in place.

    Parameters
    ----------
    sch : tvm.s_tir.Schedule
        Schedule of a module whose ``main`` is a :data:`ConvKind.DEPTHWISE` kernel.
    knobs : ConvKnobs
        Vector width and parallelism.
    rows : int, optional
        Output rows per step, at most (stride 2 takes a divisor of the height); default
        :func:`_depthwise_rows`.
    """
    conv = sch.get_sblock(DEPTHWISE_BLOCK)
    pad = sch.get_sblock(PAD_BLOCK)
    last = _epilogue(sch, conv)
    n, f, y, x, rc, ry, rx = sch.get_loops(conv)
    width = int(sch.get(x).extent)
    padded = int(sch.get(pad).writes[0].source.shape[-1])
    taps = int(sch.get(rx).extent)
    stride = next(s for s in range(1, padded + 1) if (padded - taps) // s + 1 == width)
    if stride > 1:
        # Columns deinterleaved by phase, [.., x % s, x // s]: a strided conv then reads
        # contiguous vectors (tap rx reads phase rx % s from column x + rx // s). An odd
        # padded width leaves one zero column at the end of the last phase.
        sch.transform_layout(pad, ("write", 0),
                             lambda n_, c, h, w: (n_, c, h, w % stride, w // stride),
                             pad_value=None if padded % stride == 0 else 0.0)  # fmt: skip
        # The copy runs in the stored order (see _copy_padded_plane). Vectorised by TVM in
        # either order, one side is scalar (2x slower).
        if len(sch.get(pad).iter_vars) == 4:
            sch.transform_block_layout(pad, lambda n_, c, h, w: (n_, c, h, w // stride, w % stride))
        else:  # the padded layout already gave the copy the [.., x % s, x // s] domain
            sch.transform_block_layout(pad, lambda n_, c, h, ph, j: (n_, c, h, j, ph))
    lanes = _depthwise_lanes(width, knobs)
    height = int(sch.get(y).extent)
    if rows is None:
        rows = _depthwise_rows(height, stride)
    else:
        rows = min(rows, height) if stride == 1 else _largest_divisor(height, rows)
    x0, xv = sch.split(x, [None, lanes])
    y0, y1 = sch.split(y, [None, rows])
    sch.reorder(n, f, y0, x0, rc, ry, rx, y1, xv)
    sch.compute_at(pad, f)  # the padded plane of one channel, built once
    sch.reverse_compute_at(last, y0)
    tile = _tile_loops(sch, last, 3, y=rows, x=width)
    if "x" in tile:
        sch.vectorize(sch.split(tile["x"], [None, lanes])[1])
    _copy_padded_plane(sch, pad, stride, (padded - _shape(sch.get(pad).reads[0].source)[-1]) // 2)
    sch.unroll(ry)
    sch.unroll(rx)
    sch.unroll(y1)
    sch.vectorize(xv)
    if knobs.parallel:
        sch.parallel(sch.fuse(n, f))
    sch.decompose_reduction(conv, rc)
