"""Real DFTs as cos/sin matrices (NumPy): the one definition of the SpecNet DFT matrices.

Relax has no FFT op, and ``torch.export`` graphs should hold only standard ops, so the
2-D orthonormal real DFT of the small feature maps SpecNet uses (grids up to ~36) is
written as two real matmul stages against these matrices:

* forward (``rfft2`` of an ``M x M`` map zero-padded to ``G x G``)::

      A_re = x @ C,   A_im = -x @ S                     C, S: [M, G//2+1]
      X_re = Cf @ A_re + Sf @ A_im                      Cf, Sf: [G, M]
      X_im = Cf @ A_im - Sf @ A_re

* inverse (``irfft2`` evaluated only at the kept output ``positions``)::

      B_re = Ci @ X_re - Si @ X_im,  B_im = Ci @ X_im + Si @ X_re      Ci, Si: [P, G]
      x = B_re @ Wc - B_im @ Ws                                      Wc, Ws: [G//2+1, P]

  where ``Wc``/``Ws`` weight column ``q`` by 2 except DC and Nyquist (conjugate symmetry).

The PyTorch lowering (:mod:`tvm_freq.specnet.lowering`) uses them, and its exported graph
reaches TVM as ordinary matmuls; this module imports neither PyTorch nor TVM. Each axis
carries ``1 / sqrt(G)`` (``norm="ortho"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["rdft_matrices", "dft_matrices", "idft_matrices", "irdft_matrices", "check_pos"]


def check_pos(name: str, value: int) -> None:
    """Check that ``value`` is a positive int (a grid or a size).

    Parameters
    ----------
    name : str
        How to name the value in the error message.
    value : int
        Value to check.
    """
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _angles(rows: np.ndarray, cols: np.ndarray, grid: int) -> np.ndarray:
    # Reduce p * m modulo G in integers first: exact twiddles for any grid.
    return 2.0 * np.pi * (np.outer(rows, cols) % grid) / grid


def rdft_matrices(size: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Cos/sin matrices of the real-to-half-spectrum DFT along the last axis.

    Parameters
    ----------
    size : int
        Input length ``M`` (the rest of the grid is zero padding).
    grid : int
        DFT length ``G >= M``.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``C, S`` of shape ``[M, G // 2 + 1]`` (float64); ``X = x @ C - 1j * (x @ S)``.
    """
    check_pos("size", size)
    check_pos("grid", grid)
    if size > grid:
        raise ValueError(f"size {size} exceeds the grid {grid}")
    a = _angles(np.arange(size), np.arange(grid // 2 + 1), grid)
    return np.cos(a) / np.sqrt(grid), np.sin(a) / np.sqrt(grid)


def dft_matrices(size: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Cos/sin matrices of the complex DFT along the second-to-last axis.

    Parameters
    ----------
    size : int
        Input length ``M``.
    grid : int
        DFT length ``G >= M``.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``Cf, Sf`` of shape ``[G, M]``; ``X = (Cf - 1j * Sf) @ A``.
    """
    check_pos("size", size)
    check_pos("grid", grid)
    if size > grid:
        raise ValueError(f"size {size} exceeds the grid {grid}")
    a = _angles(np.arange(grid), np.arange(size), grid)
    return np.cos(a) / np.sqrt(grid), np.sin(a) / np.sqrt(grid)


def idft_matrices(grid: int, positions: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Cos/sin matrices of the inverse complex DFT along axis -2, at ``positions`` only.

    Parameters
    ----------
    grid : int
        DFT length ``G``.
    positions : sequence of int
        Output rows to evaluate (a crop or a subsampling), each in ``[0, G)``.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``Ci, Si`` of shape ``[len(positions), G]``; ``B = (Ci + 1j * Si) @ X``.
    """
    check_pos("grid", grid)
    pos = np.asarray(positions, dtype=np.int64)
    if pos.size == 0 or pos.min() < 0 or pos.max() >= grid:
        raise ValueError(f"positions must be non-empty and in [0, {grid})")
    a = _angles(pos, np.arange(grid), grid)
    return np.cos(a) / np.sqrt(grid), np.sin(a) / np.sqrt(grid)


def irdft_matrices(grid: int, positions: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Matrices of the half-spectrum-to-real inverse DFT along the last axis.

    Parameters
    ----------
    grid : int
        DFT length ``G``.
    positions : sequence of int
        Output columns to evaluate, each in ``[0, G)``.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``Wc, Ws`` of shape ``[G // 2 + 1, len(positions)]``;
        ``x = B.real @ Wc - B.imag @ Ws``. Columns other than DC and Nyquist count twice
        (they stand for their conjugate partners).
    """
    check_pos("grid", grid)
    pos = np.asarray(positions, dtype=np.int64)
    if pos.size == 0 or pos.min() < 0 or pos.max() >= grid:
        raise ValueError(f"positions must be non-empty and in [0, {grid})")
    h = grid // 2 + 1
    w = np.full(h, 2.0)
    w[0] = 1.0
    if grid % 2 == 0:
        w[-1] = 1.0
    a = _angles(np.arange(h), pos, grid)
    return w[:, None] * np.cos(a) / np.sqrt(grid), w[:, None] * np.sin(a) / np.sqrt(grid)
