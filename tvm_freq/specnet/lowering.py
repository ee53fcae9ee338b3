"""The real-arithmetic inference path of spectral blocks, for ``torch.export``.

In lowering mode (:func:`tvm_freq.specnet.set_lowering`) spectra travel as dense
real/imaginary float tensors and every transform is a matmul against constant DFT
matrices (:mod:`tvm_freq.dft_matrices`, NumPy), so an exported graph holds only
standard ops. Kernel spectra and DFT matrices are registered as non-persistent
buffers on the first (eager) call. This module holds those transforms
(:func:`real_rdft2`, :func:`real_irdft2`), the head (:func:`real_to_spatial`) and the
lowered block (:func:`real_block`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import dft_matrices as dft
from .ops import half, kernel_spectrum

if TYPE_CHECKING:
    from .layers import SpectralConv2d
    from .storage import SpecMap

__all__ = ["real_rdft2", "real_irdft2", "real_to_spatial", "real_block"]


def _const(module: nn.Module, name: str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    key = "_lower_" + name
    buf = module._buffers.get(key)
    if buf is None:
        buf = make()
        module.register_buffer(key, buf, persistent=False)
    return buf


def _mat(module: nn.Module, name: str, make: Callable[[], Any]) -> torch.Tensor:
    return _const(module, name, lambda: torch.as_tensor(make(), dtype=torch.float32))


def real_rdft2(module, x, grid, tag):
    """Orthonormal ``rfft2`` of real ``[..., M, M]`` maps on a ``grid`` grid, as matmuls.

    Parameters
    ----------
    module : nn.Module
        Caches the DFT matrices as buffers (keys include ``tag``).
    x : torch.Tensor
        Real maps.
    grid : int
        FFT grid ``G >= M``.
    tag : str
        Buffer name prefix.

    Returns
    -------
    tuple of torch.Tensor
        Real and imaginary parts ``[..., G, G // 2 + 1]``.
    """
    m = x.shape[-1]
    c = _mat(module, f"{tag}_rc", lambda: dft.rdft_matrices(m, grid)[0])
    s = _mat(module, f"{tag}_rs", lambda: dft.rdft_matrices(m, grid)[1])
    cf = _mat(module, f"{tag}_fc", lambda: dft.dft_matrices(m, grid)[0])
    sf = _mat(module, f"{tag}_fs", lambda: dft.dft_matrices(m, grid)[1])
    a_re = torch.matmul(x, c)
    a_im = -torch.matmul(x, s)
    return (
        torch.matmul(cf, a_re) + torch.matmul(sf, a_im),
        torch.matmul(cf, a_im) - torch.matmul(sf, a_re),
    )


def real_irdft2(module, re, im, grid, positions, tag):
    """Orthonormal ``irfft2`` evaluated at the rows/columns ``positions`` only, as matmuls.

    Parameters
    ----------
    module : nn.Module
        Caches the DFT matrices as buffers (keys include ``tag``).
    re, im : torch.Tensor
        Half spectrum ``[..., G, G // 2 + 1]``.
    grid : int
        FFT grid ``G``.
    positions : tuple of int
        Output rows and columns to evaluate.
    tag : str
        Buffer name prefix.

    Returns
    -------
    torch.Tensor
        Real ``[..., len(positions), len(positions)]``.
    """
    ci = _mat(module, f"{tag}_ic", lambda: dft.idft_matrices(grid, positions)[0])
    si = _mat(module, f"{tag}_is", lambda: dft.idft_matrices(grid, positions)[1])
    wc = _mat(module, f"{tag}_iwc", lambda: dft.irdft_matrices(grid, positions)[0])
    ws = _mat(module, f"{tag}_iws", lambda: dft.irdft_matrices(grid, positions)[1])
    b_re = torch.matmul(ci, re) - torch.matmul(si, im)
    b_im = torch.matmul(ci, im) + torch.matmul(si, re)
    return torch.matmul(b_re, wc) - torch.matmul(b_im, ws)


def real_to_spatial(m: SpecMap, owner: nn.Module | None = None) -> torch.Tensor:
    """Inverse-transform a real-form map, apply its pending pool and crop to its support.

    Parameters
    ----------
    m : SpecMap
        Map in real (``re``/``im``) form.
    owner : nn.Module, optional
        Module that caches the DFT matrices as buffers.

    Returns
    -------
    torch.Tensor
        Real ``[B, C, support // pool, support // pool]``.
    """
    # Without an owner the matrices are rebuilt per call (eager use only).
    owner = owner if owner is not None else nn.Module()
    tag = f"tospatial_g{m.grid}_s{m.support}"
    x = real_irdft2(owner, m.re, m.im, m.grid, tuple(range(m.support)), tag)
    return F.avg_pool2d(x, m.pool) if m.pool > 1 else x


def _relu_tail(mod, yr, yi, grid, out_grid, out_support):
    # "spatial_relu" (beyond the paper): stride and crop by the inverse DFT at the kept
    # positions, bias and ReLU in space, forward DFT, threshold on the result.
    pos = tuple(range(0, grid, mod.stride))[:out_support]
    a = real_irdft2(mod, yr, yi, grid, pos, f"out_g{grid}")
    if mod.bias is not None:
        a = a + mod.bias.detach().float()[:, None, None]
    yr, yi = real_rdft2(mod, torch.relu(a), out_grid, f"out_g{grid}")
    keep = torch.sqrt(yr * yr + yi * yi) > mod.beta
    zero = torch.zeros_like(yr)
    return torch.where(keep, yr, zero), torch.where(keep, yi, zero)


def real_block(
    mod: SpectralConv2d, inputs, pieces, batch, grid, out_grid, out_support
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lowered forward of a :class:`~tvm_freq.specnet.SpectralConv2d` (inference only).

    Parameters
    ----------
    mod : SpectralConv2d
        The block; constants are cached on it as non-persistent buffers.
    inputs : list
        Spatial tensors and real-form :class:`~tvm_freq.specnet.SpecMap` inputs.
    pieces : list of Piece
        Their geometry (:class:`~tvm_freq.specnet.autograd.Piece`).
    batch, grid, out_grid, out_support : int
        Batch size, conv grid, output grid and output support.

    Returns
    -------
    tuple of torch.Tensor
        Real and imaginary parts ``[B, C_out, out_grid, out_grid // 2 + 1]`` of the
        thresholded, activated output spectrum (for ``"spatial_relu"``, the thresholded
        spectrum of the activated map).
    """
    xs_re, xs_im = [], []
    for j, (x, p) in enumerate(zip(inputs, pieces, strict=True)):
        tag = f"in{j}_g{p.grid}_s{p.support}_p{p.pool}_t{grid}"
        if p.kind == "spatial":
            re, im = real_rdft2(mod, x, grid, tag)
        elif p.pool == 1 and p.grid == grid and (p.support == grid or mod.pointwise):
            re, im = x.re, x.im
        elif mod.pointwise and p.grid % p.pool == 0 and p.eff_grid == grid:
            # Spectral pooling keeps the halo: pool the whole periodic map (no wrap, since
            # the pool divides the grid), which is exactly spectral_avg_pool2d.
            xs = real_irdft2(mod, x.re, x.im, p.grid, tuple(range(p.grid)), tag)
            re, im = real_rdft2(mod, F.avg_pool2d(xs, p.pool), grid, tag)
        else:
            # Crop (and pool) in space, then back: the same linear map as spectral_crop.
            xs = real_irdft2(mod, x.re, x.im, p.grid, tuple(range(p.support)), tag)
            if p.pool > 1:
                xs = F.avg_pool2d(xs, p.pool)
            re, im = real_rdft2(mod, xs, grid, tag)
        xs_re.append(re)
        xs_im.append(im)
    re = xs_re[0] if len(xs_re) == 1 else torch.cat(xs_re, 1)
    im = xs_im[0] if len(xs_im) == 1 else torch.cat(xs_im, 1)
    nf = grid * half(grid)
    cin, cout = mod.in_channels, mod.out_channels

    def kspec():
        with torch.no_grad():
            k = kernel_spectrum(mod.weight.detach().double(), grid, mod.padding)
        return k.reshape(cout, cin, nf).permute(2, 1, 0).contiguous()  # [F, Cin, Cout]

    kr = _const(mod, f"k_re_g{grid}", lambda: kspec().real.float())
    ki = _const(mod, f"k_im_g{grid}", lambda: kspec().imag.float())
    # Per-frequency GEMM over channels: [F, B, Cin] @ [F, Cin, Cout].
    xr = re.reshape(batch, cin, nf).permute(2, 0, 1)
    xi = im.reshape(batch, cin, nf).permute(2, 0, 1)
    yr = torch.matmul(xr, kr) - torch.matmul(xi, ki)
    yi = torch.matmul(xr, ki) + torch.matmul(xi, kr)
    yr = yr.permute(1, 2, 0).reshape(batch, cout, grid, half(grid))
    yi = yi.permute(1, 2, 0).reshape(batch, cout, grid, half(grid))
    if mod.activation == "spatial_relu":
        return _relu_tail(mod, yr, yi, grid, out_grid, out_support)
    if mod.stride > 1 or grid != out_grid:
        # Stride and halo crop (_project_output): inverse at the kept rows/cols, forward again.
        pos = tuple(range(0, grid, mod.stride))[:out_support]
        ys = real_irdft2(mod, yr, yi, grid, pos, f"out_g{grid}")
        yr, yi = real_rdft2(mod, ys, out_grid, f"out_g{grid}")
    if mod.bias is not None:

        def dc(part):
            b = torch.zeros(cout, out_grid, half(out_grid))
            if part == "re":
                b[:, 0, 0] = mod.bias.detach().float() * out_grid
            return b

        yr = yr + _const(mod, f"bias_re_g{out_grid}", lambda: dc("re"))
    keep = torch.sqrt(yr * yr + yi * yi) > mod.beta
    zero = torch.zeros_like(yr)
    if mod.activation == "spectral_tanh":
        yr, yi = torch.tanh(yr), torch.tanh(yi)
    yr = torch.where(keep, yr, zero)
    yi = torch.where(keep, yi, zero)
    return yr, yi
