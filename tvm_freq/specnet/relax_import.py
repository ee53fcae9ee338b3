"""Trained SpecNet -> Relax IRModule, ready for :func:`tvm_freq.build` or ``tvm.compile``.

Route: the modules *lower themselves*. :func:`specnet_to_relax` copies the model, switches
its spectral blocks to their real-arithmetic inference path
(:func:`tvm_freq.specnet.set_lowering`), runs it once eagerly (which registers the
constant DFT matrices and per-block kernel spectra as buffers) and exports it with
``torch.export``. The exported graph holds only standard ops (``matmul``, ``tanh``,
``sqrt``, ``gt``, ``where``, ``avg_pool2d``, reshapes), so
``relax.frontend.torch.from_exported_program`` converts it with no custom converter.
Every FFT becomes two real matmul stages against the cos/sin matrices of
:mod:`tvm_freq.dft_matrices`, the per-frequency complex GEMM four batched real matmuls,
and threshold plus tanh elementwise ops, all of which ``tvm_freq.build`` can fuse and
tune like any other Relax graph. See ``docs/specnet.md`` for why this route was chosen
over a ``custom_convert_map``.

TVM is imported inside :func:`specnet_to_relax` only, so that ``import tvm_freq.specnet``
loads no TVM.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .layers import set_lowering, spectral_layers

if TYPE_CHECKING:
    import tvm

__all__ = ["lower_specnet", "specnet_to_relax"]


def lower_specnet(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """Return an eval-mode copy of ``model`` whose forward uses only standard torch ops.

    Parameters
    ----------
    model : nn.Module
        A Spec-network (or any model containing :class:`~tvm_freq.specnet.SpectralConv2d`).
    example_input : torch.Tensor
        Input of the shape the module will be exported for.

    Returns
    -------
    nn.Module
        The lowered copy; its output equals ``model.eval()(x)`` up to float rounding.
    """
    if not isinstance(example_input, torch.Tensor):
        raise TypeError("example_input must be a tensor")
    lowered = copy.deepcopy(model).eval()
    # Constants are built in float64 and stored as float32, matching the float32 input.
    lowered.float()
    set_lowering(lowered, True)
    with torch.no_grad():
        lowered(example_input.float())  # eager run registers the constant buffers
    return lowered


def specnet_to_relax(
    model: nn.Module, example_input: torch.Tensor, *, keep_params_as_input: bool = False
) -> tvm.IRModule:
    """Convert a trained Spec-network to a Relax ``IRModule`` (inference, beta applied).

    Parameters
    ----------
    model : nn.Module
        The model (not modified).
    example_input : torch.Tensor
        Example input; fixes the static input shape.
    keep_params_as_input : bool
        Passed to ``from_exported_program``; by default weights are bound as constants.

    Returns
    -------
    tvm.IRModule
        Module with a ``main`` function taking the input batch and returning logits.
    """
    from torch.export import export
    from tvm.relax.frontend.torch import from_exported_program

    if not spectral_layers(model):
        raise ValueError("the model has no SpectralConv2d; import it with tvm_freq.frontend")
    lowered = lower_specnet(model, example_input)
    x = example_input.detach().float()
    with torch.no_grad():
        program = export(lowered, (x,))
    kwargs: dict[str, Any] = {"keep_params_as_input": keep_params_as_input}
    return from_exported_program(program, **kwargs)
