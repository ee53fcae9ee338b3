"""What the default conv schedules share: the legalised kernels' block names, the knobs,
and helpers for tiles and fused epilogues (:mod:`tvm_freq.schedules.conv2d`,
:mod:`tvm_freq.schedules.depthwise`)."""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir

__all__ = ["CONV_BLOCK", "DEPTHWISE_BLOCK", "MATMUL_BLOCK", "PAD_BLOCK", "ConvKnobs"]

# Block names of Relax's legalised NCHW convolutions (TOPI's compute definitions).
CONV_BLOCK = "conv2d_nchw"
DEPTHWISE_BLOCK = "group_conv2d_nchw"
PAD_BLOCK = "pad_temp"
MATMUL_BLOCK = "matmul"


@dataclass(frozen=True)
class ConvKnobs:
    """Tile sizes of the default conv schedules.

    Parameters
    ----------
    lanes : int
        Vector width in floats (16 with AVX-512, 8 with AVX2).
    rows : int
        Register rows of the pointwise micro-kernel (upper bound; a divisor is used).
    col_vectors : int
        Vectors per row of the pointwise micro-kernel (upper bound).
    parallel : bool
        Spread output-channel tiles over threads.
    """

    lanes: int = 16
    rows: int = 7
    col_vectors: int = 4
    parallel: bool = False

    def __post_init__(self) -> None:
        if self.lanes < 1 or self.lanes & (self.lanes - 1):
            raise ValueError(f"lanes must be a power of two, got {self.lanes}")
        if self.rows < 1 or self.col_vectors < 1:
            raise ValueError("rows and col_vectors must be >= 1")


def _shape(buf: object) -> tuple[int, ...]:
    return tuple(int(d) for d in buf.shape)  # type: ignore[attr-defined]


def _pow2_divisor(n: int, cap: int) -> int:
    """The largest power of two that divides ``n`` and is at most ``cap``."""
    return min(n & -n, 1 << (cap.bit_length() - 1))


def _largest_divisor(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def _epilogue(sch: s_tir.Schedule, block: s_tir.SBlockRV) -> s_tir.SBlockRV:
    """Inline the elementwise chain after ``block`` into its last block; return that block.

    Without a chain, ``block`` writes the kernel's output itself; it then gets an internal
    buffer and a copy block (returned), so that its layout may change.
    """
    if not sch.get_consumers(block):
        return sch.cache_write(block, 0, "global")
    chain = []
    current = block
    while True:
        consumers = sch.get_consumers(current)
        if len(consumers) != 1:
            break
        current = consumers[0]
        chain.append(current)
    for b in chain[:-1]:
        sch.compute_inline(b)
    return chain[-1]


def _tile_loops(
    sch: s_tir.Schedule, block: s_tir.SBlockRV, depth: int, **extents: int
) -> dict[str, s_tir.LoopRV]:
    """Name the loops ``reverse_compute_at`` made for ``block`` below ``depth`` outer loops.

    It makes one loop per iteration variable of the tile, in the order given, and none
    for those of extent 1.
    """
    own = sch.get_loops(block)[depth:]
    names = [k for k, e in extents.items() if e > 1]
    assert len(own) == len(names), (names, len(own))
    return dict(zip(names, own, strict=True))
