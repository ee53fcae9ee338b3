"""Block-size policies for :class:`~tvm_freq.freq.FreqConfig`: ``fn(name, conv, hw) -> k``.

:func:`split_block_size` (by block index), :func:`mobilenetv2_224_block_size` (the
paper's) and :func:`overhead_block_size` (largest ``k`` whose transform overhead fits).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..dct import MIN_BLOCK, check_block
from ..macs import unpruned_macs

__all__ = [
    "BlockSizeFn",
    "split_block_size",
    "mobilenetv2_224_block_size",
    "overhead_block_size",
]

BlockSizeFn = Callable[[str, nn.Conv2d, tuple[int, int]], "int | None"]


def split_block_size(boundary: int = 13, early: int = 2, late: int = 7) -> BlockSizeFn:
    """Block-size policy by block index: ``early`` up to block ``boundary``, ``late`` after.

    The block index is the first number in the module name (``features.<i>...`` in
    MobileNetV2); names without one get ``early``.

    Parameters
    ----------
    boundary : int
        Last block index that gets ``early``.
    early, late : int
        Macroblock sizes.

    Returns
    -------
    callable
        ``fn(name, conv, input_hw) -> int`` for :class:`FreqConfig`.
    """
    check_block(early, "block size")
    check_block(late, "block size")

    def policy(name: str, conv: nn.Conv2d, input_hw: tuple[int, int]) -> int:
        idx = next((int(p) for p in name.split(".") if p.isdigit()), None)
        return early if idx is None or idx <= boundary else late

    return policy


def mobilenetv2_224_block_size() -> BlockSizeFn:
    """The paper's MobileNetV2-224 (ImageNet) policy: 2x2 up to block 13, 7x7 after.

    Blocks 14 onwards run on 7x7 maps at 224x224, so a 7x7 macroblock covers a map.

    Returns
    -------
    callable
        Block-size policy for :class:`FreqConfig`.
    """
    return split_block_size(13, 2, 7)


def overhead_block_size(max_overhead: float = 0.4, max_block: int = 4) -> BlockSizeFn:
    """Block-size policy: per layer, the largest ``k <= max_block`` whose overhead fits.

    The overhead of an unpruned layer is its DCT + IDCT MACs over its dense MACs,
    ``(Cin + Cout) k^2 / (Cin Cout)`` times the zero-padding factor. Narrow layers
    (large overhead) get small blocks, wide ones large blocks; ``k = 2`` when nothing
    fits. This is the paper's trade-off between pruning precision and transform cost
    (section 3.1) made per layer.

    Parameters
    ----------
    max_overhead : float
        Largest acceptable overhead ratio, > 0.
    max_block : int
        Largest block size tried, 2 to 8.

    Returns
    -------
    callable
        Block-size policy for :class:`FreqConfig`.
    """
    if not max_overhead > 0:
        raise ValueError(f"max_overhead must be > 0, got {max_overhead}")
    check_block(max_block, "block size")

    def policy(name: str, conv: nn.Conv2d, input_hw: tuple[int, int]) -> int:
        h, w = input_hw
        cin, cout = conv.in_channels, conv.out_channels
        for k in range(max_block, MIN_BLOCK, -1):
            lm = unpruned_macs(h, w, k, cin, cout)
            if (lm.dct + lm.idct) / lm.dense <= max_overhead:
                return k
        return MIN_BLOCK

    return policy
