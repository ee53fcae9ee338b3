"""Block DCT building blocks shared by training (PyTorch) and the compiler (NumPy/TIR).

Conventions, used everywhere in tvm_freq:

* A macroblock is ``k x k`` pixels, ``2 <= k <= 8``.
* Coefficients are ordered in JPEG zigzag order; coefficient ``n`` has vertical
  frequency ``u`` and horizontal frequency ``v`` with ``(u, v) = zigzag(k)[n]``.
* The basis is the orthonormal 2-D DCT-II: ``D[n, i * k + j] = a(u) a(v)
  cos(pi (2i+1) u / 2k) cos(pi (2j+1) v / 2k)``, so ``D @ D.T == I`` and the
  inverse is ``D.T``.
* Padding: a spatial size that ``k`` does not divide is padded with zeros at the
  bottom and on the right up to the next multiple of ``k``; outputs are cropped
  back. Training and the compiler pad the same way (:func:`padded_size`).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

__all__ = [
    "MIN_BLOCK",
    "MAX_BLOCK",
    "zigzag",
    "zigzag_indices",
    "dct_basis",
    "check_block",
    "padded_size",
    "block_grid",
    "num_blocks",
    "block_dct_np",
    "block_idct_np",
]

MIN_BLOCK = 2
MAX_BLOCK = 8

# The JPEG standard's zigzag table for 8x8 (ITU-T T.81, figure A.6), as
# natural (row-major) indices in scan order. Kept here only to test against.
JPEG_ZIGZAG_8X8 = (
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
    12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
)  # fmt: skip


def check_block(k: Any, what: str = "macroblock size", *, python_int: bool = False) -> None:
    """Check a macroblock size: an int (not a bool) in ``[MIN_BLOCK, MAX_BLOCK]``.

    The one block-size check of the package: the DCT, the PyTorch layers and the mask
    file all call it.

    Parameters
    ----------
    k : Any
        Value to check.
    what : str
        How to name the value in the error message.
    python_int : bool
        Accept only Python ints, not NumPy integers (a mask file must hold JSON ints).

    Raises
    ------
    ValueError
        ``"<what> must be an int in [2, 8], got <k>"``.
    """
    if (
        isinstance(k, bool)
        or not isinstance(k, int if python_int else (int, np.integer))
        or not MIN_BLOCK <= k <= MAX_BLOCK
    ):
        raise ValueError(f"{what} must be an int in [{MIN_BLOCK}, {MAX_BLOCK}], got {k!r}")


@functools.cache
def zigzag(k: int) -> tuple[tuple[int, int], ...]:
    """Return the JPEG zigzag scan of a ``k x k`` block as ``(row, col)`` pairs.

    Parameters
    ----------
    k : int
        Macroblock size.

    Returns
    -------
    tuple of (int, int)
        ``k*k`` pairs; entry ``n`` is the frequency (vertical, horizontal) of coefficient ``n``.
    """
    check_block(k)
    order = []
    for s in range(2 * k - 1):  # anti-diagonal index row + col
        cells = [(r, s - r) for r in range(k) if 0 <= s - r < k]
        # JPEG walks even diagonals bottom-left -> top-right, odd ones the other way.
        order.extend(reversed(cells) if s % 2 == 0 else cells)
    return tuple(order)


def zigzag_indices(k: int) -> np.ndarray:
    """Return the natural (row-major) index of each zigzag position, shape ``[k*k]``.

    Parameters
    ----------
    k : int
        Macroblock size.

    Returns
    -------
    numpy.ndarray
        int64 array ``idx`` with ``idx[n] = row * k + col`` of coefficient ``n``.
    """
    return np.array([r * k + c for r, c in zigzag(k)], dtype=np.int64)


@functools.cache
def _dct_basis(k: int) -> np.ndarray:
    i = np.arange(k)
    a = np.full(k, np.sqrt(2.0 / k))
    a[0] = np.sqrt(1.0 / k)
    c1 = a[:, None] * np.cos(np.pi * (2 * i[None, :] + 1) * np.arange(k)[:, None] / (2 * k))
    basis = np.empty((k * k, k * k))
    for n, (u, v) in enumerate(zigzag(k)):
        basis[n] = np.outer(c1[u], c1[v]).reshape(-1)
    basis.setflags(write=False)
    return basis


def dct_basis(k: int, dtype: str | np.dtype = "float64") -> np.ndarray:
    """Return the orthonormal 2-D DCT-II basis for ``k x k`` blocks, rows in zigzag order.

    Parameters
    ----------
    k : int
        Macroblock size, 2 to 8.
    dtype : str or numpy.dtype
        Output dtype.

    Returns
    -------
    numpy.ndarray
        ``D`` of shape ``[k*k, k*k]``: coefficient ``n`` of a block ``x`` (flattened
        row-major) is ``D[n] @ x``, and ``x = D.T @ coefs``.
    """
    check_block(k)
    return _dct_basis(k).astype(dtype)


def padded_size(size: int, k: int) -> int:
    """Return ``size`` rounded up to a multiple of ``k`` (zero padding at the end).

    Parameters
    ----------
    size : int
        Height or width.
    k : int
        Macroblock size.

    Returns
    -------
    int
        The padded size.
    """
    return -(-size // k) * k


def block_grid(height: int, width: int, k: int) -> tuple[int, int]:
    """Return the number of macroblocks along each axis, ``(ceil(H/k), ceil(W/k))``.

    Parameters
    ----------
    height, width : int
        Spatial size of the map.
    k : int
        Macroblock size.

    Returns
    -------
    tuple of int
        Blocks per column and per row (the map is zero padded, :func:`padded_size`).
    """
    return padded_size(height, k) // k, padded_size(width, k) // k


def num_blocks(height: int, width: int, k: int) -> int:
    """Return the number of ``k x k`` macroblocks of one ``H x W`` map.

    Parameters
    ----------
    height, width : int
        Spatial size of the map.
    k : int
        Macroblock size.

    Returns
    -------
    int
        ``ceil(H/k) * ceil(W/k)``.
    """
    bh, bw = block_grid(height, width, k)
    return bh * bw


def _blocks(x: np.ndarray, k: int) -> tuple[np.ndarray, tuple[int, int]]:
    n, c, h, w = x.shape
    hp, wp = padded_size(h, k), padded_size(w, k)
    xp = np.zeros((n, c, hp, wp), dtype=x.dtype)
    xp[:, :, :h, :w] = x
    b = xp.reshape(n, c, hp // k, k, wp // k, k).transpose(0, 1, 2, 4, 3, 5)
    return b.reshape(n, c, hp // k, wp // k, k * k), (h, w)


def block_dct_np(x: np.ndarray, k: int, num_coefs: int | None = None) -> np.ndarray:
    """Blocked DCT of an NCHW array (NumPy reference).

    Parameters
    ----------
    x : numpy.ndarray
        ``[N, C, H, W]`` input.
    k : int
        Macroblock size.
    num_coefs : int, optional
        Keep only the first ``num_coefs`` zigzag coefficients (truncated DCT).

    Returns
    -------
    numpy.ndarray
        ``[N, C, ceil(H/k), ceil(W/k), m]`` coefficients, ``m = num_coefs or k*k``.
    """
    m = k * k if num_coefs is None else num_coefs
    b, _ = _blocks(x, k)
    return b @ dct_basis(k, x.dtype)[:m].T


def block_idct_np(coefs: np.ndarray, k: int, out_hw: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`block_dct_np`; missing trailing coefficients count as zero.

    Parameters
    ----------
    coefs : numpy.ndarray
        ``[N, C, BH, BW, m]`` coefficients in zigzag order, ``m <= k*k``.
    k : int
        Macroblock size.
    out_hw : tuple of int
        ``(H, W)`` to crop the result to.

    Returns
    -------
    numpy.ndarray
        ``[N, C, H, W]`` spatial array.
    """
    n, c, bh, bw, m = coefs.shape
    pix = coefs @ dct_basis(k, coefs.dtype)[:m]
    x = pix.reshape(n, c, bh, bw, k, k).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, bh * k, bw * k)
    return np.ascontiguousarray(x[:, :, : out_hw[0], : out_hw[1]])
