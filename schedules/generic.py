"""Default CPU schedules for the kernels around the convolutions: elementwise and reductions.

- **elementwise** (only data-parallel blocks, each writing as many elements as the
  output, e.g. a residual add left unfused or a reshape): inlined into one loop,
  vectorised, and split over threads when the target has several cores.
- **reduction** (one reduction block, with data-parallel blocks before it that can be
  inlined and elementwise blocks after it on its output, e.g. a global average pool
  legalised as a sum and a divide): the output elements are one loop, split over
  threads; each element's reduction runs in order (the reduced axes are the innermost,
  contiguous ones here, and reordering a float sum would change its rounding), and the
  epilogue is computed per output element.

:func:`tvm_freq.schedules.conv2d.default_schedule` dispatches to these by
:func:`tvm_freq.schedules.conv2d.conv_kind`.
"""

from __future__ import annotations

import math
from typing import Protocol

import tvm
from tvm import s_tir

__all__ = ["is_elementwise", "is_reduction", "schedule_elementwise", "schedule_reduction"]

#: ``IterVar.iter_type`` of data-parallel and commutative-reduction block axes.
_SPATIAL, _REDUCE = 0, 2


class _Knobs(Protocol):
    """What these schedules read of the conv knobs: vector width and parallelism."""

    lanes: int
    parallel: bool


def _shape(buf: object) -> tuple[int, ...]:
    return tuple(int(d) for d in buf.shape)  # type: ignore[attr-defined]


def _pow2_divisor(n: int, cap: int) -> int:
    """The largest power of two that divides ``n`` and is at most ``cap``."""
    return min(n & -n, 1 << (cap.bit_length() - 1))


def _blocks(func: tvm.tirx.PrimFunc) -> tuple[s_tir.Schedule, list]:
    sch = s_tir.Schedule(tvm.IRModule({"main": func}), error_render_level="none")
    return sch, sch.get_child_blocks(sch.get_sblock("root"))


def _kinds(block: object) -> set[int]:
    return {int(iv.iter_type) for iv in block.iter_vars}  # type: ignore[attr-defined]


def is_elementwise(func: tvm.tirx.PrimFunc) -> bool:
    """Whether every block is spatial and writes as many elements as the output has.

    Parameters
    ----------
    func : tvm.tirx.PrimFunc
        A legalised kernel.

    Returns
    -------
    bool
        True when :func:`schedule_elementwise` fits.
    """
    sch, blocks = _blocks(func)
    out = math.prod(_shape(func.params[-1]))
    for rv in blocks:
        block = sch.get(rv)
        if _kinds(block) != {_SPATIAL}:
            return False
        if len(block.writes) != 1 or math.prod(_shape(block.writes[0].source)) != out:
            return False
    return bool(blocks)


def is_reduction(func: tvm.tirx.PrimFunc) -> bool:
    """Whether ``func`` is one reduction with spatial blocks before and elementwise after.

    Parameters
    ----------
    func : tvm.tirx.PrimFunc
        A legalised kernel.

    Returns
    -------
    bool
        True when :func:`schedule_reduction` fits: exactly one block has reduction
        axes, its loops are its spatial axes (if any) then its reduced axes, and every
        block after it writes as many elements as it does.
    """
    sch, blocks = _blocks(func)
    reducing = [i for i, rv in enumerate(blocks) if _REDUCE in _kinds(sch.get(rv))]
    if len(reducing) != 1:
        return False
    red = sch.get(blocks[reducing[0]])
    kinds = [int(iv.iter_type) for iv in red.iter_vars]
    if not set(kinds) <= {_SPATIAL, _REDUCE} or kinds != sorted(kinds) or len(red.writes) != 1:
        return False
    size = math.prod(_shape(red.writes[0].source))
    for i, rv in enumerate(blocks):
        block = sch.get(rv)
        if i == reducing[0]:
            continue
        if _kinds(block) != {_SPATIAL} or len(block.writes) != 1:
            return False
        if i > reducing[0] and math.prod(_shape(block.writes[0].source)) != size:
            return False
    return True


def schedule_elementwise(sch: s_tir.Schedule, knobs: _Knobs) -> None:
    """Schedule an elementwise kernel in place: one fused loop, vectorised.

    Parameters
    ----------
    sch : tvm.s_tir.Schedule
        Schedule of a kernel for which :func:`is_elementwise` holds.
    knobs : ConvKnobs
        Vector width and parallelism.
    """
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    for block in blocks[:-1]:
        sch.compute_inline(block)
    loop = sch.fuse(*sch.get_loops(blocks[-1]))
    total = int(sch.get(loop).extent)
    lanes = _pow2_divisor(total, knobs.lanes)
    outer, vec = sch.split(loop, [None, lanes])
    if lanes > 1:
        sch.vectorize(vec)
    if knobs.parallel:
        sch.parallel(outer)


def schedule_reduction(sch: s_tir.Schedule, knobs: _Knobs) -> None:
    """Schedule a reduction kernel in place: output elements fused (and parallel).

    Parameters
    ----------
    sch : tvm.s_tir.Schedule
        Schedule of a kernel for which :func:`is_reduction` holds.
    knobs : ConvKnobs
        Parallelism.
    """
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    at = next(i for i, rv in enumerate(blocks) if _REDUCE in _kinds(sch.get(rv)))
    for block in blocks[:at]:
        sch.compute_inline(block)
    red = blocks[at]
    kinds = [int(iv.iter_type) for iv in sch.get(red).iter_vars]
    loops = sch.get_loops(red)
    n_spatial = kinds.count(_SPATIAL)
    if len(loops) - n_spatial > 1:
        sch.fuse(*loops[n_spatial:])
    if n_spatial == 0:  # a reduction to one value: nothing to spread
        return
    spatial = sch.fuse(*loops[:n_spatial])
    for block in blocks[at + 1 :]:
        sch.reverse_compute_at(block, spatial)
    if knobs.parallel:
        sch.parallel(spatial)
