"""Default CPU schedules for the dense convolutions (NCHW) and matmuls that Relax legalises.

An untuned build used to run these kernels as naive loops (about 1 GMAC/s). When no
tuning record matches, :func:`default_schedule` gives each a hand-written schedule:

- **pointwise** (1x1, stride 1, groups 1; block ``conv2d_nchw``): a register-tiled GEMM
  ``out[f, p] = sum_c W[f, c] X[c, p]`` over the flattened pixels ``p = y * W + x``.
  When the pixel count is a multiple of the vector width, pixels are vectorised and
  output channels are the register rows (weights broadcast, activations loaded as
  vectors). Otherwise (14x14, 7x7 maps) output channels are vectorised from a transposed
  copy of the weights, and pixels are the rows; the accumulators live in ``[p, f]`` order
  and the epilogue transposes the tile once. Maps that suit neither (17x17, 9x9 with
  narrow channels; 130x130, 65x65, 33x33, where padding is nearly free) compute on pixels
  padded with zeros to whole tiles (``pad_einsum``); see :func:`_padded_pixel_step`.
- **depthwise** (block ``group_conv2d_nchw`` with one input channel per group): per
  channel, the padded plane is built once, then each output row accumulates the ``k x k``
  taps on vectors of output columns. With stride 2 the plane's columns are stored by
  phase (even, odd), so each tap reads contiguous vectors.
- **general** (any other ``conv2d_nchw``: a 3x3 stride-2 stem, a strided or padded 1x1):
  output channels vectorised from transposed weights, output columns as register rows.
- **matmul** (``[M, K] x [K, N]``, e.g. a classifier): vectors of ``N`` accumulated over
  ``K`` in registers.
- **elementwise** and **reduction** kernels (a residual add left unfused, a reshape, a
  global average pool): :mod:`tvm_freq.schedules.generic`.

The elementwise epilogue that Relax fused into the conv (bias, ReLU6 clip, a residual
add) is inlined into one block and computed per tile, while the tile is in cache.
Kernels whose shape fits neither pattern are left as they are. Records from tuning
always take precedence (the pipeline applies this only to kernels without a record).
"""

from __future__ import annotations

from dataclasses import replace
from enum import Enum

import tvm
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.schedule import ScheduleError
from tvm_freq.schedules.conv_common import (
    CONV_BLOCK,
    DEPTHWISE_BLOCK,
    MATMUL_BLOCK,
    PAD_BLOCK,
    ConvKnobs,
    _epilogue,
    _largest_divisor,
    _pow2_divisor,
    _shape,
    _tile_loops,
)
from tvm_freq.schedules.depthwise import (
    schedule_depthwise,
)
from tvm_freq.schedules.generic import (
    is_elementwise,
    is_reduction,
    schedule_elementwise,
    schedule_reduction,
)

from tvm_freq.band_plan import round_up
from tvm_freq.target import vector_lanes

__all__ = [
    "CONV_BLOCK", "DEPTHWISE_BLOCK", "PAD_BLOCK", "ConvKind", "ConvKnobs", "conv_kind",
    "default_schedule", "design_space", "design_space_size", "knobs_for", "register_tiles",
    "sample_knobs",
    "schedule_depthwise", "schedule_general", "schedule_elementwise", "schedule_matmul",
    "schedule_pointwise", "schedule_reduction",
]  # fmt: skip

class ConvKind(Enum):
    """Which default schedule a kernel gets."""

    POINTWISE = "pointwise"
    DEPTHWISE = "depthwise"
    GENERAL = "general"  # any other conv with groups 1 (e.g. a 3x3 stride-2 stem)
    MATMUL = "matmul"  # [M, K] x [K, N], e.g. the classifier
    ELEMENTWISE = "elementwise"  # only elementwise blocks, e.g. a residual add
    REDUCTION = "reduction"  # one reduction and elementwise blocks, e.g. a global pool


def knobs_for(target: tvm.target.Target) -> ConvKnobs:
    """The default conv knobs for a CPU target.

    Parameters
    ----------
    target : tvm.target.Target
        CPU target; its vector width and ``num-cores`` decide lanes and parallelism.

    Returns
    -------
    ConvKnobs
        The knobs.
    """
    cores = int(target.attrs.get("num-cores", 1) or 1)
    lanes = vector_lanes(target)
    # rows x col_vectors accumulators plus the operands must fit the vector registers:
    # 32 with AVX-512, 16 with AVX2.
    return ConvKnobs(lanes=lanes, rows=7 if lanes >= 16 else 6, col_vectors=4 if lanes >= 16
                     else 2, parallel=cores > 1)  # fmt: skip


def _block_outputs(func: tvm.tirx.PrimFunc) -> dict[str, tuple[int, ...]]:
    """The known blocks of ``func`` and the shape of the buffer each writes."""
    sch = s_tir.Schedule(tvm.IRModule({"main": func}), error_render_level="none")
    found = {}
    for name in (CONV_BLOCK, DEPTHWISE_BLOCK, PAD_BLOCK, MATMUL_BLOCK):
        try:
            block = sch.get(sch.get_sblock(name))
        except ScheduleError:  # no block of that name
            continue
        found[name] = tuple(int(d) for d in block.writes[0].source.shape)
    return found


def conv_kind(func: tvm.tirx.PrimFunc) -> ConvKind | None:
    """Which default schedule fits a legalised kernel, if any.

    Parameters
    ----------
    func : tvm.tirx.PrimFunc
        A fused kernel from Relax's ``LegalizeOps`` + ``FuseTIR``.

    Returns
    -------
    ConvKind or None
        ``POINTWISE`` for a 1x1 stride-1 unpadded conv, ``DEPTHWISE`` for a conv with one
        input channel per group, ``GENERAL`` for any other conv with groups 1,
        ``MATMUL`` for ``[M, K] x [K, N]``, ``ELEMENTWISE`` for data-parallel blocks
        only, ``REDUCTION`` for one reduction with elementwise blocks around it
        (:mod:`tvm_freq.schedules.generic`); None otherwise, and None when the fused
        epilogue changes the shape.
    """
    names = _block_outputs(func)
    if not names:
        if is_elementwise(func):
            return ConvKind.ELEMENTWISE
        return ConvKind.REDUCTION if is_reduction(func) else None
    if len(func.params) < 3:
        return None
    x, w, out = _shape(func.params[0]), _shape(func.params[1]), _shape(func.params[-1])
    main = names.get(CONV_BLOCK) or names.get(DEPTHWISE_BLOCK) or names.get(MATMUL_BLOCK)
    if main != out:
        return None  # the fused epilogue changes the shape (e.g. the next layer's pad)
    if set(names) == {MATMUL_BLOCK}:
        if len(x) == len(w) == len(out) == 2 and x[1] == w[0] and out == (x[0], w[1]):
            return ConvKind.MATMUL
        return None
    if PAD_BLOCK not in names:
        return None
    if len(x) != 4 or len(w) != 4 or len(out) != 4:
        return None
    if CONV_BLOCK in names and DEPTHWISE_BLOCK not in names:
        if w[1] != x[1] or out[1] != w[0]:
            return None
        if w[2:] == (1, 1) and x[2:] == out[2:]:
            return ConvKind.POINTWISE
        return ConvKind.GENERAL
    if DEPTHWISE_BLOCK in names and CONV_BLOCK not in names:
        if w[1] == 1 and x[1] == out[1] == w[0]:
            return ConvKind.DEPTHWISE
    return None


def _vector_tile(n: int, knobs: ConvKnobs) -> tuple[int, int]:
    """Vector width and vectors per row for a vectorised axis of extent ``n`` (both divide it)."""
    lanes = _pow2_divisor(n, knobs.lanes)
    return lanes, _largest_divisor(n // lanes, knobs.col_vectors)


def _channel_vector_tile(pixels: int, channels: int, knobs: ConvKnobs) -> tuple[int, int, int]:
    """Register tile of a pointwise conv whose output channels are the vector axis:
    ``(pixel rows, lanes, vectors per row)``, rows dividing the pixels.

    Rows are the largest divisor up to the knobs' rows. Where that is 1 (7x7 maps under
    AVX2's 6 rows: one row of two vectors), a divisor one past them, as the design space
    allows (:func:`register_tiles`), is taken with fewer vectors per row to stay within
    the register budget (7 rows of one vector: MobileNetV2's 7x7 layers 2.6-3.0x faster,
    ``docs/results/avx2/layers-mobilenetv2-224-vs-104263f.md``).
    """
    lanes, vecs = _vector_tile(channels, knobs)
    rows = _largest_divisor(pixels, knobs.rows)
    budget = knobs.rows * knobs.col_vectors
    if rows == 1 and pixels % (knobs.rows + 1) == 0 and knobs.rows + 1 <= budget:
        rows = knobs.rows + 1
        vecs = _largest_divisor(channels // lanes, min(knobs.col_vectors, budget // rows))
    # Accumulators, a weight vector per column and the broadcast pixel must fit the
    # registers: 7 rows of 4 AVX-512 vectors need 33 of 32; with 3 or 2, eight of
    # MobileNetV2's 14x14 and 7x7 kernels ran 1.23-1.29x faster (docs/compiler.md).
    while vecs > 1 and rows * vecs + vecs + 1 > vector_registers(knobs):
        vecs = _largest_divisor(channels // lanes, vecs - 1)
    return rows, lanes, vecs


def vector_registers(knobs: ConvKnobs) -> int:
    """Vector registers of the knobs' machine: 32 with AVX-512 (16 lanes), else 16."""
    return 32 if knobs.lanes >= 16 else 16


def _finish_microkernel(
    sch: s_tir.Schedule,
    block: s_tir.SBlockRV,
    reduction: s_tir.LoopRV,
    unrolled: tuple[s_tir.LoopRV, ...],
    vector: s_tir.LoopRV,
    lanes: int,
    outer: s_tir.LoopRV,
    knobs: ConvKnobs,
) -> None:
    """Unroll the register tile, vectorise its inner axis, spread ``outer`` over threads."""
    for loop in unrolled:
        sch.unroll(loop)
    if lanes > 1:
        sch.vectorize(vector)
    if knobs.parallel:
        sch.parallel(outer)
    # Split into init + update last: vectorize and parallel need whole reduction blocks.
    sch.decompose_reduction(block, reduction)


# Blocks so marked are split out by Relax's SplitLayoutRewritePreproc and, for constant
# weights, folded at compile time (as MetaSchedule's RewriteLayout postproc does).
LAYOUT_REWRITE_PREPROC = "meta_schedule.layout_rewrite_preproc"


def _pack_weights(
    sch: s_tir.Schedule, block: s_tir.SBlockRV, weights: object, index_map: object
) -> None:
    """Read ``weights`` through a copy in the layout ``index_map`` gives.

    With constant weights (``cpu_weight_prepack``, the default) the copy is folded into
    the constants at compile time; otherwise it runs once per call.
    """
    packed = sch.cache_read(block, _read_index(sch, block, weights), "global")
    sch.transform_layout(packed, ("write", 0), index_map)
    sch.annotate(packed, LAYOUT_REWRITE_PREPROC, True)


def _read_index(sch: s_tir.Schedule, block: s_tir.SBlockRV, buffer: object) -> int:
    names = [r.source.name for r in sch.get(block).reads]
    return names.index(buffer.name)  # type: ignore[attr-defined]


# Most padding, as a fraction of the pixels, that gives whole vectors whole tiles.
WHOLE_VECTOR_PADDING = 0.07


def _padded_pixel_step(
    pixels: int, channels: int, knobs: ConvKnobs, widening: bool = False
) -> int:
    """The multiple to pad the pixel axis to, or 0 when the kernel needs no padding.

    Pixels are vectorised when whole vectors divide them, or when padding them with zeros
    to whole tiles of ``lanes * vecs`` adds at most 5% (130x130, 65x65, 33x33 maps).
    Whole vectors are padded to whole tiles of the knobs' vectors per row when too few
    divide them, on one thread, when the conv does not widen (``widening``: more output
    channels than input ones) and that adds at most :data:`WHOLE_VECTOR_PADDING` (28x28
    maps under AVX-512).
    Otherwise output channels are vectorised, when whole vectors divide them and the
    register tile (pixel rows that divide the pixels, times vectors that divide the
    channels) holds at least a fifth of the accumulators the knobs allow (14x14 and 7x7
    maps, where padding would add 14-30%; 9x9 with 1248 channels). Layers that fit
    neither (17x17 with 88 channels: one row of one half-width vector; 9x9 with 208
    channels: 3 accumulators) are padded when that adds at most half the pixels (AVX2:
    Lite2's 17x17 expand layers 2.3x faster, ``docs/results/avx2/`` ``layers-*.md``). Tiny
    maps (1x1, 4x4) are not.
    The tile is the one with the fewest padded pixels over 2 or more vectors per row,
    then the most vectors.
    """
    if pixels % knobs.lanes == 0:
        # Whole vectors, but the tile takes vectors that divide them: 28x28 maps are 49
        # AVX-512 vectors, so one vector per row. Padding to the knobs' vectors (6.1%
        # more pixels there) made MobileNetV2's 28x28 project layers 1.42x faster on one
        # thread; its expand layers gained nothing. On two threads the padded projects ran
        # faster in one process, slower than one thread in another (docs/compiler.md).
        whole = knobs.lanes * knobs.col_vectors
        if (not widening and not knobs.parallel
                and _largest_divisor(pixels // knobs.lanes, knobs.col_vectors) < knobs.col_vectors
                and round_up(pixels, whole) <= pixels * (1 + WHOLE_VECTOR_PADDING)):
            return whole
        return 0
    steps = [knobs.lanes * v for v in range(max(1, min(2, knobs.col_vectors)),
                                               knobs.col_vectors + 1)]  # fmt: skip
    step = min(steps, key=lambda s: (round_up(pixels, s), -s))
    if round_up(pixels, step) <= pixels * 1.05:
        return step
    if channels % knobs.lanes == 0:
        rows, _, vecs = _channel_vector_tile(pixels, channels, knobs)
        # One pixel row reads each weight vector once per pixel: 17x17 maps under AVX2
        # (one row of two vectors) ran at a third of the padded tile's speed.
        if rows > 1 and rows * vecs >= max(2, knobs.rows * knobs.col_vectors // 5):
            return 0
    # A few pixels (a 1x1 or 4x4 map) would mostly compute zeros: channels stay the vector.
    return step if round_up(pixels, step) <= pixels * 1.5 else 0


def _pad_pixels(
    sch: s_tir.Schedule, conv: s_tir.SBlockRV, flat: s_tir.SBlockRV, step: int
) -> s_tir.SBlockRV:
    """Pad the GEMM's pixel axis to a multiple of ``step``; return the padded input copy.

    The padded activations are zero past ``pixels``, and the epilogue reads only the real
    pixels of the padded accumulators, so the padding never reaches the output.
    """
    sch.pad_einsum(conv, [1, 1, step, 1, 1, 1])
    (padded_in,) = [b for b in sch.get_producers(conv) if sch.get(b).name_hint.endswith("_pad")]
    sch.compute_inline(flat)  # the flattening copy reads straight into the padded one
    sch.compute_inline(sch.get_consumers(conv)[0])  # the unpadding copy, into the epilogue
    return padded_in


# Fewest pixel tiles that copy their own activations and that threads share by tile (a
# 7x7 map has 7 tiles of 7 pixels); with fewer, one copy of the whole input comes first
# and threads share channel and pixel tiles.
MIN_THREAD_TILES = 7


def schedule_pointwise(sch: s_tir.Schedule, knobs: ConvKnobs = ConvKnobs()) -> None:
    """Schedule a legalised pointwise conv (with its fused epilogue) in place.

    Parameters
    ----------
    sch : tvm.s_tir.Schedule
        Schedule of a module whose ``main`` is a :data:`ConvKind.POINTWISE` kernel.
    knobs : ConvKnobs
        Tile sizes.
    """
    func = sch.mod["main"]
    conv = sch.get_sblock(CONV_BLOCK)
    sch.compute_inline(sch.get_sblock(PAD_BLOCK))  # 1x1 unpadded: a plain copy
    last = _epilogue(sch, conv)
    _, f, y, x, rc, *_ = sch.get_loops(conv)
    width = int(sch.get(x).extent)
    pixels = int(sch.get(y).extent) * width
    channels = int(sch.get(f).extent)
    step = _padded_pixel_step(pixels, channels, knobs, channels > int(sch.get(rc).extent))
    padded = round_up(pixels, step) if step else pixels
    over_pixels = pixels % knobs.lanes == 0 or step > 0
    # Channel vectors over tiles of rows that divide the width: each tile lies in one
    # image row, so the GEMM reads the input in place (its div/mod by the width is of the
    # tile index, hoisted out of the reduction) and no copy is needed.
    in_place = not over_pixels and width % _channel_vector_tile(pixels, channels, knobs)[0] == 0
    flat = None
    if not in_place:
        # Activations as [n, c, p]: contiguous vectors of pixels, no div/mod in the GEMM.
        flat = sch.cache_read(conv, _read_index(sch, conv, func.params[0]), "global")
        sch.transform_layout(flat, ("write", 0), lambda n, c, y, x: (n, c, y * width + x))
    if over_pixels:
        lanes, vecs = _vector_tile(padded, knobs)
        sch.transform_layout(conv, ("write", 0), lambda n, f, y, x: (n, f, y * width + x))
    else:
        # Vectorise output channels: weights packed as [f tile, c, f in tile] (folded at
        # compile time), accumulators in [p, f] order.
        rows, lanes, vecs = _channel_vector_tile(pixels, channels, knobs)
        ft = lanes * vecs
        _pack_weights(sch, conv, func.params[1],
                      lambda f, c, a, b: (f // ft, c, a, b, f % ft))  # fmt: skip
        sch.transform_layout(conv, ("write", 0), lambda n, f, y, x: (n, y * width + x, f))
    sch.transform_block_layout(
        conv, lambda n, f, y, x, rc, ry, rx: (n, f, y * width + x, rc, ry, rx)
    )
    sch.transform_block_layout(last, lambda n, f, y, x: (n, f, y * width + x))
    if padded != pixels:
        flat = _pad_pixels(sch, conv, flat, step)
    n, f, p, rc, ry, rx = sch.get_loops(conv)
    if over_pixels:
        rows = _largest_divisor(channels, knobs.rows)
        p0, p1, pv = sch.split(p, [None, vecs, lanes])
        f0, f1 = sch.split(f, [None, rows])
        # Pixel tiles outermost when the input is the bigger stream (Cin >= Cout) or threads
        # share the work: a tile of activations ([Cin, vecs * lanes], in cache) then serves
        # every channel tile, instead of the whole input streaming once per channel tile
        # (and once per thread). One thread on a widening conv writes its output planes in
        # order faster with channel tiles outermost.
        pixels_outer = int(sch.get(rc).extent) >= channels or knobs.parallel
        if pixels_outer:
            sch.reorder(n, p0, f0, rc, ry, rx, f1, p1, pv)
        else:
            sch.reorder(n, f0, p0, rc, ry, rx, f1, p1, pv)
        inner = (f1, p1, pv)
    else:
        f0, f1, fv = sch.split(f, [None, vecs, lanes])
        p0, p1 = sch.split(p, [None, rows])
        # Pixel tiles outermost for a narrowing conv (the bigger input) when threads share
        # the work or there are several channel tiles of full-height tiles: each tile's
        # activations ([Cin, rows], read in place, or copied by the tile itself below)
        # then serve every channel tile from L1. (Per-tile copies of 3-pixel tiles,
        # EfficientNet-Lite2's 9x9 head, cost more than they saved.) A widening conv's
        # input is small; its threads share channel and pixel tiles (7x7 maps: 7 pixel
        # tiles alone split unevenly).
        reuse = int(sch.get(f0).extent) > 1 and rows >= knobs.rows
        pixels_outer = (
            int(sch.get(rc).extent) >= channels
            and (knobs.parallel or reuse)
            and int(sch.get(p0).extent) >= MIN_THREAD_TILES
        )
        if pixels_outer:
            sch.reorder(n, p0, f0, rc, ry, rx, p1, f1, fv)
        else:
            sch.reorder(n, f0, p0, rc, ry, rx, p1, f1, fv)
        inner = (p1, f1, fv)
    sch.reverse_compute_at(last, f0 if pixels_outer else p0)  # the inner tile loop
    if over_pixels:
        tile = _tile_loops(sch, last, 3, f=rows, p=vecs * lanes)
        sch.vectorize(sch.split(tile["p"], [None, lanes])[1])
    else:
        tile = _tile_loops(sch, last, 3, f=vecs * lanes, p=rows)
        if "p" in tile and "f" in tile:
            sch.reorder(tile["p"], tile["f"])
        if lanes > 1:
            sch.vectorize(sch.split(tile["f"], [None, lanes])[1])
    if flat is None:
        first, second = (p0, f0) if pixels_outer else (f0, p0)
        outer = sch.fuse(first, second) if knobs.parallel else first
    elif pixels_outer and padded == pixels and int(sch.get(p0).extent) >= MIN_THREAD_TILES:
        # Each pixel tile copies its own activations ([Cin, tile]) just before its GEMM
        # reads them, from L1, for every channel tile; with threads the copy runs on every
        # core and lands in the cache of the core that reads it. (A copy of the whole input
        # ahead of the GEMM ran on one thread, and the other core then read half of it from
        # the first one's cache: project layers ran slower on two threads than on one.)
        sch.transform_block_layout(flat, lambda n, c, y, x: (n, c, y * width + x))
        sch.compute_at(flat, p0)
        outer = p0
        fl = sch.get_loops(flat)
        if int(sch.get(fl[-1]).extent) % knobs.lanes == 0:
            sch.vectorize(sch.split(fl[-1], [None, knobs.lanes])[1])
    else:
        fl = sch.get_loops(flat)
        if padded == pixels:
            sch.vectorize(sch.split(sch.fuse(fl[-2], fl[-1]), [None, knobs.lanes])[1])
        else:  # whole vectors of real pixels; the last partial vector and the zeros stay scalar
            body = pixels // knobs.lanes * knobs.lanes
            if body:
                head = sch.loop_partition(fl[-1], [body])[0]
                sch.vectorize(sch.split(head, [None, knobs.lanes])[1])
        # Threads share channel tiles and pixel tiles (a narrow layer, 64 output channels
        # at 14x14, has one channel tile), and the copy's channels.
        first, second = (p0, f0) if pixels_outer else (f0, p0)
        outer = sch.fuse(first, second) if knobs.parallel else first
        if knobs.parallel:
            sch.parallel(fl[1])
    _finish_microkernel(sch, conv, rc, inner[:2], inner[2], lanes, outer, knobs)


def schedule_general(sch: s_tir.Schedule, knobs: ConvKnobs = ConvKnobs()) -> None:
    """Schedule a legalised conv with groups 1 and any kernel, stride and padding in place.

    Output channels are vectorised from a transposed copy of the weights (``[c, ky, kx,
    f]``), output columns are the register rows, and the reduction runs over input
    channels and taps; the padded input is built once per call.

    Parameters
    ----------
    sch : tvm.s_tir.Schedule
        Schedule of a module whose ``main`` is a :data:`ConvKind.GENERAL` kernel.
    knobs : ConvKnobs
        Tile sizes.
    """
    func = sch.mod["main"]
    conv = sch.get_sblock(CONV_BLOCK)
    pad = sch.get_sblock(PAD_BLOCK)
    last = _epilogue(sch, conv)
    _, f, _, x, *_ = sch.get_loops(conv)
    channels, width = int(sch.get(f).extent), int(sch.get(x).extent)
    lanes, vecs = _vector_tile(channels, knobs)
    ft = vecs * lanes
    _pack_weights(sch, conv, func.params[1], lambda f, c, a, b: (f // ft, c, a, b, f % ft))
    sch.transform_layout(conv, ("write", 0), lambda n, f, y, x: (n, y, x, f))
    rows = _largest_divisor(width, knobs.rows)
    n, f, y, x, rc, ry, rx = sch.get_loops(conv)
    f0, f1, fv = sch.split(f, [None, vecs, lanes])
    x0, x1 = sch.split(x, [None, rows])
    sch.reorder(n, f0, y, x0, rc, ry, rx, x1, f1, fv)
    sch.reverse_compute_at(last, x0)
    tile = _tile_loops(sch, last, 4, f=vecs * lanes, x=rows)
    if "x" in tile and "f" in tile:
        sch.reorder(tile["x"], tile["f"])
    if lanes > 1:
        sch.vectorize(sch.split(tile["f"], [None, lanes])[1])
    pl = sch.get_loops(pad)
    sch.vectorize(sch.split(pl[-1], [None, min(knobs.lanes, int(sch.get(pl[-1]).extent))])[1])
    # Threads share channel tiles and output rows (the stem has one channel tile).
    outer = sch.fuse(f0, y) if knobs.parallel else f0
    _finish_microkernel(sch, conv, rc, (x1, f1), fv, lanes, outer, knobs)


def schedule_matmul(sch: s_tir.Schedule, knobs: ConvKnobs = ConvKnobs()) -> None:
    """Schedule a legalised ``[M, K] x [K, N]`` matmul (with its fused epilogue) in place.

    Rows of ``M`` times vectors of ``N`` accumulate in registers over ``K``; the weight
    rows are read contiguously.

    Parameters
    ----------
    sch : tvm.s_tir.Schedule
        Schedule of a module whose ``main`` is a :data:`ConvKind.MATMUL` kernel.
    knobs : ConvKnobs
        Tile sizes.
    """
    func = sch.mod["main"]
    mm = sch.get_sblock(MATMUL_BLOCK)
    last = _epilogue(sch, mm)
    i, j, k = sch.get_loops(mm)
    m, n = int(sch.get(i).extent), int(sch.get(j).extent)
    lanes, vecs = _vector_tile(n, knobs)
    nt = vecs * lanes
    # Weights as [column tile, k, column in tile]: each tile streams contiguously.
    _pack_weights(sch, mm, func.params[1], lambda kk, jj: (jj // nt, kk, jj % nt))
    rows = _largest_divisor(m, knobs.rows)
    i0, i1 = sch.split(i, [None, rows])
    j0, j1, jv = sch.split(j, [None, vecs, lanes])
    sch.reorder(i0, j0, k, i1, j1, jv)
    sch.reverse_compute_at(last, j0)
    tile = _tile_loops(sch, last, 2, i=rows, j=vecs * lanes)
    if lanes > 1:
        sch.vectorize(sch.split(tile["j"], [None, lanes])[1])
    _finish_microkernel(sch, mm, k, (i1, j1), jv, lanes, j0, knobs)


_SCHEDULES = {
    ConvKind.POINTWISE: schedule_pointwise,
    ConvKind.DEPTHWISE: schedule_depthwise,
    ConvKind.GENERAL: schedule_general,
    ConvKind.MATMUL: schedule_matmul,
    ConvKind.ELEMENTWISE: schedule_elementwise,
    ConvKind.REDUCTION: schedule_reduction,
}


# Output rows per depthwise step that the design space samples, besides the default.
SAMPLED_DEPTHWISE_ROWS = (1, 2, 4, 7)


def register_tiles(knobs: ConvKnobs) -> list[tuple[int, int]]:
    """Register tiles ``(rows, vectors per row)`` the design space samples.

    Every tile from 4 to ``knobs.rows * knobs.col_vectors`` accumulators (the register
    budget), rows up to one more than the knobs' and the knobs' own tile first.

    Parameters
    ----------
    knobs : ConvKnobs
        The target's knobs (:func:`knobs_for`).

    Returns
    -------
    list of tuple of int
        The tiles; the first is the default schedule's.
    """
    budget = knobs.rows * knobs.col_vectors
    tiles = [(r, v) for r in range(1, knobs.rows + 2) for v in range(1, knobs.col_vectors + 1)
             if min(4, budget) <= r * v <= budget]  # fmt: skip
    default = (knobs.rows, knobs.col_vectors)
    return [default, *(t for t in tiles if t != default)]


def _space_options(kind: ConvKind, knobs: ConvKnobs) -> list:
    """The points :func:`sample_knobs` chooses among for ``kind``; the first is the default."""
    if kind is ConvKind.DEPTHWISE:
        return [None, *SAMPLED_DEPTHWISE_ROWS]
    if kind in (ConvKind.ELEMENTWISE, ConvKind.REDUCTION):
        return [None]
    return register_tiles(knobs)


def design_space_size(func: tvm.tirx.PrimFunc, knobs: ConvKnobs) -> int:
    """How many points the design space of ``func`` has (:func:`sample_knobs`).

    Parameters
    ----------
    func : tvm.tirx.PrimFunc
        A kernel :func:`conv_kind` recognises.
    knobs : ConvKnobs
        The target's knobs.

    Returns
    -------
    int
        The number of schedules the space can give (1 when it has no decision).
    """
    kind = conv_kind(func)
    if kind is None:
        raise ValueError("no default schedule fits this kernel (conv_kind is None)")
    return len(_space_options(kind, knobs))


def sample_knobs(sch: s_tir.Schedule, knobs: ConvKnobs) -> None:
    """MetaSchedule design space of the dense kernels: sample the tile, then schedule.

    Pointwise, general convs and matmuls sample their register tile
    (:func:`register_tiles`), depthwise convs their output rows per step; the default
    schedule is one point of the space, sampled more often than the others, so tuning
    nearly always measures it among them.
    Elementwise kernels have no decision. Use with ``strategy="replay-func"``: the tile
    decides Python-level choices (divisors, padding), so each candidate reruns this.

    Parameters
    ----------
    sch : tvm.s_tir.Schedule
        Schedule of a kernel :func:`conv_kind` recognises.
    knobs : ConvKnobs
        The target's knobs; the sampled tile replaces ``rows`` and ``col_vectors``.
    """
    kind = conv_kind(sch.mod["main"])
    if kind is None:
        raise ValueError("no default schedule fits this kernel (conv_kind is None)")
    options = _space_options(kind, knobs)
    pick = options[_sample_index(sch, len(options))]
    if kind is ConvKind.DEPTHWISE:
        schedule_depthwise(sch, knobs, rows=pick)
    elif pick is None:
        _SCHEDULES[kind](sch, knobs)
    else:
        _SCHEDULES[kind](sch, replace(knobs, rows=pick[0], col_vectors=pick[1]))


# Probability of the default schedule's point in each sample: with 16 samples a task
# measures it with probability 1 - 0.7^16 > 99.6%, so its record is rarely worse.
DEFAULT_PROBABILITY = 0.3


def _sample_index(sch: s_tir.Schedule, n: int) -> int:
    """Sample an option index; option 0 (the default) with :data:`DEFAULT_PROBABILITY`."""
    if n == 1:
        return 0
    rest = (1.0 - DEFAULT_PROBABILITY) / (n - 1)
    return int(sch.get(sch.sample_categorical(list(range(n)), [DEFAULT_PROBABILITY]
                                              + [rest] * (n - 1))))  # fmt: skip


def design_space(target: tvm.target.Target) -> ms.space_generator.ScheduleFn:
    """The MetaSchedule design space of the dense kernels for ``target``.

    The default schedules with their tiles as decisions (:func:`sample_knobs`), and no
    schedule rules, postprocessors or mutators: tune it with ``strategy="replay-func"``.

    Parameters
    ----------
    target : tvm.target.Target
        CPU target.

    Returns
    -------
    tvm.s_tir.meta_schedule.space_generator.ScheduleFn
        The space generator.
    """
    knobs = knobs_for(target)
    return ms.space_generator.ScheduleFn(
        lambda sch: sample_knobs(sch, knobs), sch_rules=[], postprocs=[], mutator_probs={}
    )


def default_schedule(
    func: tvm.tirx.PrimFunc, target: tvm.target.Target
) -> tvm.tirx.PrimFunc | None:
    """Apply the default schedule for ``target`` to a legalised conv kernel.

    Parameters
    ----------
    func : tvm.tirx.PrimFunc
        A fused kernel; see :func:`conv_kind`.
    target : tvm.target.Target
        CPU target.

    Returns
    -------
    tvm.tirx.PrimFunc or None
        The scheduled kernel, marked ``tirx.is_scheduled``; None when no default schedule
        fits (the kernel is then left as it is).
    """
    kind = conv_kind(func)
    if kind is None:
        return None
    sch = s_tir.Schedule(tvm.IRModule({"main": func}), error_render_level="none")
    try:
        _SCHEDULES[kind](sch, knobs_for(target))
    except ScheduleError:
        return None  # e.g. an epilogue that is not elementwise: leave the kernel as it is
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)
