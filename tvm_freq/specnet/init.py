"""Model-wide initialisation and settings: LSUV calibration, threshold, workspace.

:func:`calibrate_` (data-dependent init for nets without batch norm),
:func:`set_beta` and :func:`set_workspace`.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvAct, spectral_layers
from .ops import check_beta

__all__ = ["calibrate_", "set_beta", "set_workspace"]


class _StopForwardError(Exception):
    pass


def _conv_blocks_in_order(model: nn.Module, x: torch.Tensor) -> list[ConvAct]:
    order: list[ConvAct] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, _: order.append(mod))
        for m in model.modules()
        if isinstance(m, ConvAct)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(order))


@torch.no_grad()
def calibrate_(
    model: nn.Module, x: torch.Tensor, target_rms: float = 1.0, iters: int = 1
) -> list[float]:
    """Data-dependent init (LSUV, Mishkin & Matas 2016) for nets without batch norm.

    Visits the conv blocks in forward order and rescales each kernel so that the block's
    pre-activation output has RMS ``target_rms`` on ``x``: over pixels for a spatial conv,
    over spectral entries ``|Y|`` (before the threshold) for a spectral one; with
    orthonormal transforms the two agree up to the zero-padded share of the grid.
    Without it, spectral magnitudes shrink with depth until the threshold drops every
    entry, and a block with nothing kept passes no gradient. Both twins get the same
    procedure.

    Parameters
    ----------
    model : nn.Module
        Spec-network or spatial twin (changed in place).
    x : torch.Tensor
        A representative input batch.
    target_rms : float
        Target pre-activation RMS.
    iters : int
        Rescaling passes per block (one is exact while biases are zero: a block's output
        is linear in its own kernel and its input does not depend on it).

    Returns
    -------
    list of float
        RMS measured before the last rescaling, per block in forward order.
    """
    if target_rms <= 0:
        raise ValueError("target_rms must be positive")
    was_training = model.training
    model.eval()
    out: list[float] = []
    try:
        for block in _conv_blocks_in_order(model, x):
            rms = 0.0
            for _ in range(iters):
                block.record_stats = True

                def stop(_mod, _inp, _out):
                    raise _StopForwardError

                h = block.register_forward_hook(stop)
                try:
                    model(x)
                except _StopForwardError:
                    pass
                finally:
                    h.remove()
                    block.record_stats = False
                rms = block.stats["rms"]
                if rms > 0:
                    block.conv.weight.mul_(target_rms / rms)
            out.append(rms)
    finally:
        model.train(was_training)
    return out


def set_beta(model: nn.Module, beta: float) -> nn.Module:
    """Set the threshold of every spectral block.

    Parameters
    ----------
    model : nn.Module
        Model (changed in place).
    beta : float
        New threshold, ``>= 0``.

    Returns
    -------
    nn.Module
        ``model``.
    """
    check_beta(beta)
    for _, m in spectral_layers(model):
        m.beta = float(beta)
    return model


def set_workspace(model: nn.Module, nbytes: int) -> nn.Module:
    """Set the working memory of every spectral block (``workspace_bytes``).

    It bounds the dense spectra a block holds at once in training, so it trades peak
    memory for speed; the saved-for-backward bytes do not depend on it.

    Parameters
    ----------
    model : nn.Module
        Model (changed in place).
    nbytes : int
        Bytes, ``>= 1`` (default of new blocks: :data:`DEFAULT_WORKSPACE_BYTES`).

    Returns
    -------
    nn.Module
        ``model``.
    """
    if int(nbytes) < 1:
        raise ValueError(f"workspace must be at least 1 byte, got {nbytes}")
    for _, m in spectral_layers(model):
        m.workspace_bytes = int(nbytes)
    return model
