"""Block DCT in PyTorch: :func:`block_dct` / :func:`block_idct` and their module forms.

Conventions follow :mod:`tvm_freq.dct` (zigzag order, orthonormal basis, zero padding
at the bottom and right); the basis is built from :func:`tvm_freq.dct.dct_basis`, so
training and the compiler share one definition.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..dct import check_block, dct_basis, padded_size

__all__ = ["torch_basis", "block_dct", "block_idct", "BasisModule", "BlockDCT", "BlockIDCT"]


def torch_basis(k: int, dtype: torch.dtype = torch.float32, device: Any = None) -> torch.Tensor:
    """The DCT basis of :func:`tvm_freq.dct.dct_basis` as a tensor.

    Built from ``dct.dct_basis`` so that training and the compiler share one definition.

    Parameters
    ----------
    k : int
        Macroblock size.
    dtype : torch.dtype
        Result dtype (rounded from float64).
    device : Any
        Result device.

    Returns
    -------
    torch.Tensor
        ``[k*k, k*k]`` basis, rows in zigzag order.
    """
    return torch.from_numpy(np.array(dct_basis(k), dtype=np.float64)).to(dtype=dtype, device=device)




def block_dct(
    x: torch.Tensor, k: int, num_coefs: int | None = None, *, basis: torch.Tensor | None = None
) -> torch.Tensor:
    """Blocked DCT of an NCHW tensor, zero padded at the bottom and right.

    Parameters
    ----------
    x : torch.Tensor
        ``[N, C, H, W]`` input.
    k : int
        Macroblock size, 2 to 8.
    num_coefs : int, optional
        Keep only the first ``num_coefs`` zigzag coefficients (truncated DCT).
    basis : torch.Tensor, optional
        Precomputed ``[k*k, k*k]`` basis (a module's buffer); built from
        :func:`tvm_freq.dct.dct_basis` when omitted.

    Returns
    -------
    torch.Tensor
        ``[N, C, ceil(H/k), ceil(W/k), m]`` coefficients, ``m = num_coefs or k*k``; the
        same layout as :func:`tvm_freq.dct.block_dct_np`.
    """
    check_block(k, "block size")
    if x.dim() != 4:
        raise ValueError(f"block_dct expects an NCHW tensor, got shape {tuple(x.shape)}")
    nc = k * k
    m = nc if num_coefs is None else int(num_coefs)
    if not 0 <= m <= nc:
        raise ValueError(f"num_coefs must be in [0, {nc}], got {num_coefs}")
    if basis is None:
        basis = torch_basis(k, x.dtype, x.device)
    n, c, h, w = x.shape
    hp, wp = padded_size(h, k), padded_size(w, k)
    if (hp, wp) != (h, w):
        x = F.pad(x, (0, wp - w, 0, hp - h))  # (left, right, top, bottom): zeros bottom/right
    blocks = (
        x.reshape(n, c, hp // k, k, wp // k, k).transpose(3, 4).reshape(n, c, hp // k, wp // k, nc)
    )
    return blocks @ basis[:m].T


def block_idct(
    coefs: torch.Tensor, k: int, out_hw: tuple[int, int], *, basis: torch.Tensor | None = None
) -> torch.Tensor:
    """Inverse of :func:`block_dct`; missing trailing coefficients count as zero.

    Parameters
    ----------
    coefs : torch.Tensor
        ``[N, C, BH, BW, m]`` coefficients in zigzag order, ``m <= k*k``.
    k : int
        Macroblock size.
    out_hw : tuple of int
        ``(H, W)`` to crop the result to.
    basis : torch.Tensor, optional
        Precomputed ``[k*k, k*k]`` basis.

    Returns
    -------
    torch.Tensor
        ``[N, C, H, W]`` spatial tensor.
    """
    check_block(k, "block size")
    if coefs.dim() != 5 or coefs.shape[-1] > k * k:
        raise ValueError(
            f"block_idct expects [N, C, BH, BW, m <= {k * k}] coefficients, "
            f"got shape {tuple(coefs.shape)}"
        )
    if basis is None:
        basis = torch_basis(k, coefs.dtype, coefs.device)
    n, c, bh, bw, m = coefs.shape
    h, w = out_hw
    if h > bh * k or w > bw * k:
        raise ValueError(f"out_hw {out_hw} is larger than the {bh * k}x{bw * k} blocked map")
    pix = coefs @ basis[:m]
    x = pix.reshape(n, c, bh, bw, k, k).transpose(3, 4).reshape(n, c, bh * k, bw * k)
    return x[:, :, :h, :w]


class BasisModule(nn.Module):
    """A module with a ``basis`` buffer that is rebuilt, not rounded, on dtype changes."""

    block_size: int

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        # float32 -> float64 would otherwise keep the float32-rounded basis.
        self.basis = torch_basis(self.block_size, self.basis.dtype, self.basis.device)
        return self


class BlockDCT(BasisModule):
    """Module form of :func:`block_dct`; the basis is a non-persistent buffer.

    Parameters
    ----------
    k : int
        Macroblock size.
    num_coefs : int, optional
        Truncate to the first ``num_coefs`` zigzag coefficients.
    """

    def __init__(self, k: int, num_coefs: int | None = None):
        super().__init__()
        check_block(k, "block size")
        self.k, self.block_size, self.num_coefs = k, k, num_coefs
        self.register_buffer("basis", torch_basis(k), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blocked DCT of ``x``.

        Parameters
        ----------
        x : torch.Tensor
            ``[N, C, H, W]`` input.

        Returns
        -------
        torch.Tensor
            ``[N, C, ceil(H/k), ceil(W/k), m]`` coefficients.
        """
        return block_dct(x, self.k, self.num_coefs, basis=self.basis)


class BlockIDCT(BasisModule):
    """Module form of :func:`block_idct`; the basis is a non-persistent buffer.

    Parameters
    ----------
    k : int
        Macroblock size.
    """

    def __init__(self, k: int):
        super().__init__()
        check_block(k, "block size")
        self.k = self.block_size = k
        self.register_buffer("basis", torch_basis(k), persistent=False)

    def forward(self, coefs: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        """Inverse blocked DCT, cropped to ``out_hw``.

        Parameters
        ----------
        coefs : torch.Tensor
            ``[N, C, BH, BW, m]`` coefficients.
        out_hw : tuple of int
            Output height and width.

        Returns
        -------
        torch.Tensor
            ``[N, C, H, W]``.
        """
        return block_idct(coefs, self.k, out_hw, basis=self.basis)
