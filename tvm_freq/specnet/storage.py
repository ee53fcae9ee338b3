"""Compact storage of spectral feature maps: :class:`SpecMap` and its bitmask.

A compact map stores the kept complex entries (``values``) plus a packed bitmask of
where they are (:func:`pack_mask` / :func:`unpack_mask`). Entries that conjugate
symmetry fixes (:func:`redundant_mask`) are never stored (:func:`unique_entries` per
channel) and are rebuilt on densifying (:func:`hermitian_fill`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .lowering import real_to_spatial
from .ops import apply_pool, half

__all__ = [
    "SpecMap",
    "pack_mask",
    "unpack_mask",
    "redundant_mask",
    "unique_entries",
    "hermitian_fill",
]

_BIT_WEIGHTS = (1, 2, 4, 8, 16, 32, 64, 128)


def _bit_weights(device: torch.device) -> torch.Tensor:
    return torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=device)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Pack a boolean mask into bytes, 8 entries per byte (LSB first, row-major).

    Parameters
    ----------
    mask : torch.Tensor
        Boolean tensor of any shape.

    Returns
    -------
    torch.Tensor
        ``uint8`` tensor of ``ceil(mask.numel() / 8)`` bytes.
    """
    flat = mask.reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8).to(torch.uint8) * _bit_weights(flat.device)).sum(-1, dtype=torch.uint8)


def unpack_mask(bits: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`pack_mask`.

    Parameters
    ----------
    bits : torch.Tensor
        Packed ``uint8`` bytes.
    shape : sequence of int
        Shape of the original mask.

    Returns
    -------
    torch.Tensor
        Boolean mask of ``shape``.
    """
    n = math.prod(shape)
    flat = (bits.unsqueeze(-1) & _bit_weights(bits.device)).ne(0).reshape(-1)[:n]
    return flat.view(tuple(shape))


@dataclass(frozen=True)
class SpecMap:
    """A batch of spectral feature maps (orthonormal ``rfft2`` on a ``grid x grid`` grid).

    The real map it stands for is supported on ``[0, support)^2``; the rest of the grid
    is halo that the next consumer crops away. ``pool > 1`` is an average pooling that
    has been requested but not applied yet (the consumer applies it).

    Exactly one storage form is set: compact (``values`` + ``bits``, what training
    uses) or real (``re`` + ``im`` dense float tensors of shape ``[B, C, grid, grid//2+1]``,
    used only when a model is lowered for ``torch.export``).

    Parameters
    ----------
    batch, channels, grid, support : int
        Geometry.
    values : torch.Tensor, optional
        Kept complex entries, row-major over ``[B, C, grid, grid // 2 + 1]``. Only unique
        entries are stored: those of :func:`redundant_mask` are conjugates of others and
        are rebuilt on densifying.
    bits : torch.Tensor, optional
        :func:`pack_mask` of the kept-entry mask (never set on redundant entries).
    re, im : torch.Tensor, optional
        Dense real/imaginary parts (lowering mode).
    pool : int
        Pending average-pooling factor.
    """

    batch: int
    channels: int
    grid: int
    support: int
    values: torch.Tensor | None = None
    bits: torch.Tensor | None = None
    re: torch.Tensor | None = None
    im: torch.Tensor | None = None
    pool: int = 1

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Dense shape ``(B, C, grid, grid // 2 + 1)`` of the half spectrum."""
        return (self.batch, self.channels, self.grid, half(self.grid))

    @property
    def is_compact(self) -> bool:
        """Whether the map is in compact (values + bitmask) form."""
        return self.values is not None

    @property
    def out_support(self) -> int:
        """Support after the pending pooling."""
        return self.support // self.pool

    @property
    def nnz(self) -> int:
        """Number of stored complex entries."""
        if self.values is None:
            raise ValueError("nnz is defined for compact maps only")
        return self.values.numel()

    @property
    def density(self) -> float:
        """Kept fraction of the unique half-spectrum entries (:func:`unique_entries`)."""
        return self.nnz / (self.batch * self.channels * unique_entries(self.grid))

    @property
    def nbytes(self) -> int:
        """True storage size of the compact form: values plus bitmask bytes."""
        if self.values is None or self.bits is None:
            raise ValueError("nbytes is defined for compact maps only")
        return self.values.numel() * self.values.element_size() + self.bits.numel()

    def to_dense(self) -> torch.Tensor:
        """Return the dense complex half spectrum ``[B, C, grid, grid // 2 + 1]``.

        Differentiable with respect to ``values``; the pending pool is not applied.

        Returns
        -------
        torch.Tensor
            Complex tensor.
        """
        if self.values is None:
            return torch.complex(self.re, self.im)
        return _DensifyFn.apply(self.values, self.bits, self.shape)

    def to_spatial(self) -> torch.Tensor:
        """Inverse-transform, apply the pending pool and crop to the support.

        Returns
        -------
        torch.Tensor
            Real tensor ``[B, C, support // pool, support // pool]``.
        """
        if self.values is None:
            return real_to_spatial(self)
        z = apply_pool(self.to_dense(), self.grid, self.pool)
        grid = self.grid // self.pool if self.grid % self.pool == 0 else self.grid
        x = torch.fft.irfft2(z, s=(grid, grid), norm="ortho")
        if grid == self.grid and self.pool > 1:  # pooled in space (grid not divisible)
            x = F.avg_pool2d(x[..., : self.support, : self.support], self.pool)
        return x[..., : self.out_support, : self.out_support]


@functools.lru_cache(maxsize=256)
def _mirror(grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    # The rfft2 half spectrum [G, G//2+1] of a real map still repeats itself: in column 0
    # and, for even G, the Nyquist column G/2, row r is the conjugate of row (G - r) mod G.
    # Returns the [G, G//2+1] mask of the rows past G/2 in those columns (the redundant
    # entries: G*(G//2+1) - redundant = G^2/2 + O(1) unique entries), and the row
    # permutation r -> (G - r) mod G that maps each to its partner.
    red = torch.zeros(grid, half(grid), dtype=torch.bool)
    red[grid // 2 + 1 :, 0] = True
    if grid % 2 == 0:
        red[grid // 2 + 1 :, grid // 2] = True
    return red, (-torch.arange(grid)) % grid


def redundant_mask(grid: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Entries of a ``grid x (grid // 2 + 1)`` half spectrum that conjugate symmetry fixes.

    Compact maps store only the other entries (:class:`SpecMap`); densifying restores
    these as conjugates of their partners (:func:`hermitian_fill`).

    Parameters
    ----------
    grid : int
        FFT grid size.
    device : torch.device or str, optional
        Device of the result.

    Returns
    -------
    torch.Tensor
        Boolean ``[grid, grid // 2 + 1]``.
    """
    return _mirror(grid)[0].to(device, copy=True)  # a copy: the cached mask must not change


def unique_entries(grid: int) -> int:
    """Number of half-spectrum entries of one channel that a compact map can store.

    Parameters
    ----------
    grid : int
        FFT grid size.

    Returns
    -------
    int
        ``grid * (grid // 2 + 1)`` minus the redundant entries.
    """
    return grid * half(grid) - int(_mirror(grid)[0].sum())


def hermitian_fill(z: torch.Tensor, grid: int) -> torch.Tensor:
    """Overwrite the redundant entries of a half spectrum with their conjugate partners.

    Differentiable (out of place). A half spectrum of a real map is unchanged.

    Parameters
    ----------
    z : torch.Tensor
        Complex ``[..., grid, grid // 2 + 1]``.
    grid : int
        FFT grid size.

    Returns
    -------
    torch.Tensor
        ``z`` with entries of :func:`redundant_mask` set to the conjugates of their partners.
    """
    red, perm = _mirror(grid)
    if not bool(red.any()):
        return z
    red, perm = red.to(z.device), perm.to(z.device)
    return torch.where(red, z.index_select(-2, perm).conj(), z)


def _hermitian_fill_adjoint(g: torch.Tensor, grid: int) -> torch.Tensor:
    # Adjoint of hermitian_fill under PyTorch's complex-gradient convention: a redundant
    # entry's gradient moves, conjugated, onto its partner (perm is an involution).
    red, perm = _mirror(grid)
    if not bool(red.any()):
        return g
    red, perm = red.to(g.device), perm.to(g.device)
    moved = torch.where(red, g, torch.zeros((), dtype=g.dtype, device=g.device)).conj()
    return g.masked_fill(red, 0) + moved.index_select(-2, perm)


class _DensifyFn(torch.autograd.Function):
    # Compact -> dense, saving only the bitmask (masked_scatter would save a bool mask).
    @staticmethod
    def forward(ctx, values, bits, shape):
        mask = unpack_mask(bits, shape)
        ctx.save_for_backward(bits)
        ctx.shape = shape
        return hermitian_fill(values.new_zeros(shape).masked_scatter(mask, values), shape[-2])

    @staticmethod
    def backward(ctx, grad):
        (bits,) = ctx.saved_tensors
        grad = _hermitian_fill_adjoint(grad, ctx.shape[-2])
        return grad.masked_select(unpack_mask(bits, ctx.shape)), None, None
