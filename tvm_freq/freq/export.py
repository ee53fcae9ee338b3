"""PyTorch side of the mask file: build it from a model, check it, load it, export.

:func:`masks_from_model` reads a squashed model's bands into a
:class:`~tvm_freq.masks.MaskFile`; :func:`check_masks_match` and :func:`apply_masks`
fit a mask file to a model; :func:`export` writes the masks, the dense weights and the
ONNX graph. The file format itself (NumPy/JSON only) is :mod:`tvm_freq.masks`.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_write
from ..masks import LayerMask, MaskFile, MaskMismatchError, save_masks
from .apply import set_submodule, unwrap_
from .layer import FreqPointwiseConv2d
from .sites import pointwise_sites

__all__ = ["masks_from_model", "check_masks_match", "apply_masks", "export"]


def masks_from_model(
    model: nn.Module, example_input: Any, model_name: str | None = None
) -> MaskFile:
    """Build the mask file of a squashed model.

    Parameters
    ----------
    model : torch.nn.Module
        Model whose :class:`~tvm_freq.freq.FreqPointwiseConv2d` layers are in hard or
        fixed (band) mode, e.g. after :func:`tvm_freq.freq.squash`.
    example_input : torch.Tensor or tuple
        Input for one forward pass; fixes the ordinals.
    model_name : str, optional
        Recorded in the file.

    Returns
    -------
    MaskFile
        One entry per wrapped layer, marked ``trained`` (the compiler bands them all).
    """
    sites = pointwise_sites(model, example_input)
    layers = []
    for s in sites:
        if not isinstance(s.module, FreqPointwiseConv2d):
            continue
        if s.module.mode == "soft":
            raise ValueError(
                f"layer {s.name!r} still has soft masks: call tvm_freq.freq.squash(model) first"
            )
        kin, kout = s.module.kept_counts()
        layers.append(
            LayerMask(
                s.name,
                s.ordinal,
                tuple(s.module.weight.shape),
                s.module.block_size,
                [int(v) for v in kin],
                [int(v) for v in kout],
            )
        )
    # The model applies these masks: a build must band every listed layer to match it.
    return MaskFile(tuple(layers), len(sites), model_name, trained=True)


def check_masks_match(maskfile: MaskFile, model: nn.Module, example_input: Any) -> None:
    """Check that a mask file fits a model (plain or wrapped).

    Parameters
    ----------
    maskfile : MaskFile
        Masks to check.
    model : torch.nn.Module
        The model.
    example_input : torch.Tensor or tuple
        Input for one forward pass; fixes the ordinals.

    Raises
    ------
    MaskMismatchError
        Naming the first layer whose name, ordinal or weight shape disagrees, or when
        the number of eligible pointwise convs differs.
    """
    sites = pointwise_sites(model, example_input)
    by_name = {s.name: s for s in sites}
    for lm in maskfile.layers:
        site = by_name.get(lm.name)
        if site is None:
            raise MaskMismatchError(
                f"layer {lm.name!r} (ordinal {lm.ordinal}) of the mask file is not an eligible "
                "pointwise conv of the model",
                lm.name,
            )
        if site.ordinal != lm.ordinal:
            raise MaskMismatchError(
                f"layer {lm.name!r}: mask file says ordinal {lm.ordinal}, the model runs it as "
                f"pointwise conv #{site.ordinal}",
                lm.name,
            )
        shape = tuple(site.module.weight.shape)
        if shape != lm.weight_shape:
            raise MaskMismatchError(
                f"layer {lm.name!r}: mask file says weight_shape {list(lm.weight_shape)}, "
                f"the model has {list(shape)}",
                lm.name,
            )
    if len(sites) != maskfile.num_pointwise:
        raise MaskMismatchError(
            f"the model has {len(sites)} eligible pointwise convs, the mask file says "
            f"{maskfile.num_pointwise}"
        )


def apply_masks(
    model: nn.Module, maskfile: MaskFile, example_input: Any | None = None
) -> nn.Module:
    """Load a mask file's bands into a model as fixed masks (in place).

    Plain convs are wrapped with :class:`~tvm_freq.freq.FreqPointwiseConv2d`
    (``learn=False``); already wrapped layers get fixed masks.

    Parameters
    ----------
    model : torch.nn.Module
        Plain or wrapped model.
    maskfile : MaskFile
        Masks to load.
    example_input : torch.Tensor or tuple, optional
        When given, :func:`check_masks_match` runs first (ordinals too); otherwise
        only names and weight shapes are checked.

    Returns
    -------
    torch.nn.Module
        ``model``.
    """
    if example_input is not None:
        check_masks_match(maskfile, model, example_input)
    modules = dict(model.named_modules())
    for lm in maskfile.layers:
        mod = modules.get(lm.name)
        if not isinstance(mod, (nn.Conv2d, FreqPointwiseConv2d)):
            raise MaskMismatchError(f"layer {lm.name!r} is not a conv of the model", lm.name)
        if tuple(mod.weight.shape) != lm.weight_shape:
            raise MaskMismatchError(
                f"layer {lm.name!r}: mask file says weight_shape {list(lm.weight_shape)}, "
                f"the model has {list(mod.weight.shape)}",
                lm.name,
            )
        if isinstance(mod, FreqPointwiseConv2d) and mod.block_size != lm.block:
            mod = mod.to_conv()  # re-wrap with the file's block size
        if not isinstance(mod, FreqPointwiseConv2d):
            try:
                layer = FreqPointwiseConv2d(mod, lm.block, "both", learn=False)
            except ValueError as e:
                raise MaskMismatchError(f"layer {lm.name!r}: {e}", lm.name) from None
            layer.train(mod.training)
            set_submodule(model, lm.name, layer)
            mod = layer
        mod.set_counts(lm.kin, lm.kout)
    return model


def export(
    model: nn.Module,
    maskfile_path: str | os.PathLike,
    state_dict_path: str | os.PathLike | None = None,
    onnx_path: str | os.PathLike | None = None,
    *,
    example_input: Any,
    model_name: str | None = None,
    opset: int = 17,
) -> MaskFile:
    """Write a squashed model's masks, plus its dense weights and ONNX graph.

    The state dict and ONNX file hold the *unwrapped* dense model (plain convs with
    the same names and weights); the masks travel alongside in the mask file.

    Parameters
    ----------
    model : torch.nn.Module
        Squashed wrapped model (not modified).
    maskfile_path : str or os.PathLike
        Where to write the mask file.
    state_dict_path : str or os.PathLike, optional
        Where to ``torch.save`` the dense state dict.
    onnx_path : str or os.PathLike, optional
        Where to write the dense model as ONNX.
    example_input : torch.Tensor or tuple
        Input for ordinals and for the ONNX trace.
    model_name : str, optional
        Recorded in the mask file.
    opset : int
        ONNX opset.

    Returns
    -------
    MaskFile
        The masks written.
    """
    maskfile = masks_from_model(model, example_input, model_name)
    save_masks(maskfile_path, maskfile)
    dense = unwrap_(copy.deepcopy(model)).eval()
    if state_dict_path is not None:
        sd = {k: v.detach().cpu() for k, v in dense.state_dict().items()}
        atomic_write(state_dict_path, lambda p: torch.save(sd, p))
    if onnx_path is not None:
        args = example_input if isinstance(example_input, tuple) else (example_input,)
        onnx_path = Path(onnx_path)
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with warnings.catch_warnings():
                # The TorchScript exporter warns that it is deprecated; it still works and
                # gives the plain Conv graph the compiler expects.
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(dense, args, str(onnx_path), dynamo=False, opset_version=opset)
        except Exception:  # the TorchScript exporter is deprecated; try the dynamo one
            torch.onnx.export(dense, args, str(onnx_path), dynamo=True, opset_version=opset)
    return maskfile
