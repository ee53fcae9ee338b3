"""MAC accounting for frequency-band pointwise convolutions (paper section 3.1).

For one 1x1 conv on an ``H x W`` map with ``k x k`` macroblocks and
``P = N * ceil(H/k) * ceil(W/k)`` blocks, where input channel ``c`` keeps its
first ``kin[c]`` zigzag coefficients and output channel ``o`` its first ``kout[o]``:

* dense pointwise: ``N * H * W * Cin * Cout``;
* truncated DCT: ``P * k^2 * sum(kin)`` (each kept coefficient is a ``k^2`` dot product);
* banded GEMMs: ``P * sum_n Cin_n * Cout_n``, where ``Cin_n = #{c : kin[c] > n}``
  and ``Cout_n = #{o : kout[o] > n}``;
* truncated IDCT: ``P * k^2 * sum(kout)``.

Unpruned, the overhead ratio is ``(Cin + Cout) * k^2 / (Cin * Cout)`` when ``k``
divides ``H`` and ``W``, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .dct import num_blocks

__all__ = [
    "LayerMacs",
    "dense_pointwise_macs",
    "band_macs",
    "pointwise_macs",
    "unpruned_macs",
    "masked_macs",
    "band_sizes",
    "relax_network_macs",
]


@dataclass(frozen=True)
class LayerMacs:
    """MAC counts of one pointwise layer, dense and in the frequency domain."""

    dense: int
    dct: int
    gemm: int
    idct: int

    @property
    def freq(self) -> int:
        """Total MACs of the frequency path: DCT + banded GEMMs + IDCT."""
        return self.dct + self.gemm + self.idct

    @property
    def ratio(self) -> float:
        """Frequency-path MACs divided by dense MACs (< 1 means a saving)."""
        return self.freq / self.dense if self.dense else 0.0


def dense_pointwise_macs(
    height: int, width: int, in_channels: int, out_channels: int, batch: int = 1
) -> int:
    """MACs of one dense 1x1 conv: ``N * H * W * Cin * Cout``.

    Parameters
    ----------
    height, width : int
        Spatial size of the conv's input (= output).
    in_channels, out_channels : int
        ``Cin`` and ``Cout``.
    batch : int
        Batch size.

    Returns
    -------
    int
        Multiply-accumulates.
    """
    return batch * height * width * in_channels * out_channels


def band_macs(
    height: int,
    width: int,
    k: int,
    in_channels: int,
    out_channels: int,
    cin_n: Sequence[int] | np.ndarray,
    cout_n: Sequence[int] | np.ndarray,
    batch: int = 1,
) -> LayerMacs:
    """The MAC formula of the module docstring, from the per-coefficient channel counts.

    Every other count here (:func:`pointwise_macs`, :func:`masked_macs`,
    :func:`unpruned_macs`) goes through this one.

    Parameters
    ----------
    height, width : int
        Spatial size of the conv's input (= output).
    k : int
        Macroblock size.
    in_channels, out_channels : int
        ``Cin`` and ``Cout`` (for the dense count).
    cin_n, cout_n : sequence of int
        ``k*k`` counts: how many input (output) channels keep coefficient ``n``. Their
        sums are the kept ``(channel, coefficient)`` pairs of each side.
    batch : int
        Batch size.

    Returns
    -------
    LayerMacs
        Dense and frequency-domain MAC counts.
    """
    blocks = batch * num_blocks(height, width, k)
    return LayerMacs(
        dense=dense_pointwise_macs(height, width, in_channels, out_channels, batch),
        dct=blocks * k * k * int(np.sum(cin_n)),
        gemm=blocks * int(np.dot(cin_n, cout_n)),
        idct=blocks * k * k * int(np.sum(cout_n)),
    )


def band_sizes(kin: Sequence[int], kout: Sequence[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(Cin_n, Cout_n)`` for every coefficient ``n < k*k``.

    Parameters
    ----------
    kin, kout : sequence of int
        Kept coefficient counts per input / output channel, each in ``[0, k*k]``.
    k : int
        Macroblock size.

    Returns
    -------
    tuple of numpy.ndarray
        Two int64 arrays of length ``k*k``: how many input (output) channels keep
        coefficient ``n``.
    """
    kin_a, kout_a = np.asarray(kin, dtype=np.int64), np.asarray(kout, dtype=np.int64)
    nn = k * k
    for name, arr in (("kin", kin_a), ("kout", kout_a)):
        if arr.ndim != 1 or (arr.size and (arr.min() < 0 or arr.max() > nn)):
            raise ValueError(f"{name} must be a 1-D list of counts in [0, {nn}]")
    n = np.arange(nn)
    return (kin_a[None, :] > n[:, None]).sum(1), (kout_a[None, :] > n[:, None]).sum(1)


def pointwise_macs(
    height: int,
    width: int,
    k: int,
    kin: Sequence[int],
    kout: Sequence[int],
    batch: int = 1,
) -> LayerMacs:
    """Count the MACs of one pointwise conv, dense and as truncated DCT -> bands -> IDCT.

    Parameters
    ----------
    height, width : int
        Spatial size of the conv's input (= output).
    k : int
        Macroblock size.
    kin, kout : sequence of int
        Kept coefficient counts per input channel and per output channel.
    batch : int
        Batch size.

    Returns
    -------
    LayerMacs
        Dense and frequency-domain MAC counts.
    """
    cin_n, cout_n = band_sizes(kin, kout, k)
    return band_macs(height, width, k, len(kin), len(kout), cin_n, cout_n, batch)


def unpruned_macs(
    height: int, width: int, k: int, in_channels: int, out_channels: int, batch: int = 1
) -> LayerMacs:
    """MACs of one pointwise conv in the frequency domain with every coefficient kept.

    Parameters
    ----------
    height, width : int
        Spatial size of the conv's input.
    k : int
        Macroblock size.
    in_channels, out_channels : int
        ``Cin`` and ``Cout``.
    batch : int
        Batch size.

    Returns
    -------
    LayerMacs
        :func:`pointwise_macs` with ``kin = kout = k*k`` everywhere: the transform
        overhead of an unpruned layer.
    """
    nc = k * k
    return pointwise_macs(height, width, k, [nc] * in_channels, [nc] * out_channels, batch)


def masked_macs(
    height: int, width: int, k: int, in_mask: np.ndarray, out_mask: np.ndarray, batch: int = 1
) -> LayerMacs:
    """MACs of one pointwise conv with arbitrary (not necessarily band) 0/1 masks.

    An idealised count: every kept ``(channel, coefficient)`` costs what it costs in a
    band. Equals :func:`pointwise_macs` for prefix (band) masks.

    Parameters
    ----------
    height, width : int
        Spatial size of the conv's input.
    k : int
        Macroblock size.
    in_mask, out_mask : numpy.ndarray
        ``[Cin, k*k]`` and ``[Cout, k*k]`` 0/1 (or bool) masks.
    batch : int
        Batch size.

    Returns
    -------
    LayerMacs
        Dense and frequency-domain MAC counts.
    """
    cin_n, cout_n = in_mask.sum(0).astype(np.int64), out_mask.sum(0).astype(np.int64)
    return band_macs(height, width, k, in_mask.shape[0], out_mask.shape[0], cin_n, cout_n, batch)


def relax_network_macs(mod: Any) -> int:
    """Multiply-accumulates of every ``conv2d`` and ``matmul`` in a Relax module's ``main``.

    Parameters
    ----------
    mod : tvm.IRModule
        Imported Relax module with static shapes.

    Returns
    -------
    int
        Total MACs of one run (all batch items).
    """
    import tvm
    from tvm import relax

    conv, matmul = tvm.ir.Op.get("relax.nn.conv2d"), tvm.ir.Op.get("relax.matmul")
    total = [0]

    def dims(expr: Any) -> list[int]:
        return [int(d) for d in expr.ty.shape.values]

    @relax.expr_functor.visitor
    class _Visitor(relax.PyExprVisitor):
        def visit_call_(self, call: Any) -> None:  # noqa: N802 - TVM visitor API
            super().visit_call_(call)
            if call.op == conv:
                out, w = dims(call), dims(call.args[1])
                total[0] += int(np.prod(out)) * w[1] * w[2] * w[3]
            elif call.op == matmul:
                a = dims(call.args[0])
                total[0] += int(np.prod(dims(call))) * a[-1]

    _Visitor().visit_expr(mod["main"])
    return total[0]
