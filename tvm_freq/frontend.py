"""Model import: ONNX files, ``torch.nn.Module`` and Relax ``IRModule`` -> one Relax form.

Every path ends in the same place: a Relax module whose ``main`` takes the model
inputs, with weights bound as constants and batch norm folded into the convs, so
that the passes and the tuning records see the same graph whatever the source.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tvm
from tvm import relax

from .passes.scalar_clip import ScalarClipToClip

__all__ = [
    "ImportedModel", "ModelImportError", "UnsupportedOpError", "fold_shape_arithmetic",
    "import_model", "optimize",
]  # fmt: skip


class ModelImportError(ValueError):
    """The model could not be read or converted."""


class UnsupportedOpError(ModelImportError):
    """The model uses operators the Relax importer has no converter for."""

    def __init__(self, ops: Sequence[str], source: str):
        self.ops = sorted(set(ops))
        super().__init__(
            f"{source} model uses operators that TVM's Relax importer does not support: "
            f"{', '.join(self.ops)}"
        )


@dataclass(frozen=True)
class ImportedModel:
    """A model in Relax form, with the signature of ``main``."""

    mod: tvm.IRModule
    input_names: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    input_dtypes: tuple[str, ...]
    source: str


ModelLike = str | os.PathLike | Any  # onnx.ModelProto | torch.nn.Module | tvm.IRModule


def import_model(
    model: ModelLike,
    *,
    input_shape: Sequence[int] | dict[str, Sequence[int]] | None = None,
    example_inputs: Any = None,
) -> ImportedModel:
    """Import a model into Relax.

    Parameters
    ----------
    model : path, onnx.ModelProto, torch.nn.Module or tvm.IRModule
        The model. ONNX goes through ``relax.frontend.onnx.from_onnx``; torch
        through ``torch.export`` and ``from_exported_program``.
    input_shape : sequence of int or dict, optional
        Static input shape (one input), or ``{name: shape}``. Needed for ONNX
        models with symbolic dims, and for torch modules without ``example_inputs``.
    example_inputs : torch.Tensor or tuple of torch.Tensor, optional
        Inputs for ``torch.export``; built as zeros of ``input_shape`` when absent.

    Returns
    -------
    ImportedModel
        The optimized Relax module and the signature of its ``main``.
    """
    if isinstance(model, (str, os.PathLike)):
        return _from_onnx(_load_onnx_file(Path(model)), input_shape)
    type_name = type(model).__module__ + "." + type(model).__name__
    if type_name.startswith("onnx") and hasattr(model, "graph"):
        return _from_onnx(model, input_shape)
    if isinstance(model, tvm.IRModule):
        return _from_irmodule(model)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(model, torch.nn.Module):
        return _from_torch(model, input_shape, example_inputs)
    raise TypeError(
        f"cannot import a {type_name}: pass an ONNX path or ModelProto, a torch.nn.Module, "
        "or a Relax IRModule"
    )


def _load_onnx_file(path: Path):
    import onnx

    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelImportError(f"{path} is a directory, not an ONNX model file")
    try:
        proto = onnx.load(str(path))
    except Exception as err:  # protobuf raises DecodeError and friends
        raise ModelImportError(f"{path} is not a readable ONNX model ({err})") from None
    if not proto.graph.node:
        raise ModelImportError(f"{path} is not a valid ONNX model: its graph has no nodes")
    return proto


def _onnx_inputs(proto, input_shape) -> dict[str, list[int]]:
    init = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in init]
    if isinstance(input_shape, dict):
        unknown = set(input_shape) - {i.name for i in inputs}
        if unknown:
            raise ModelImportError(f"input_shape names unknown inputs: {sorted(unknown)}")
    shapes: dict[str, list[int]] = {}
    for i, inp in enumerate(inputs):
        dims = [d.dim_value if d.HasField("dim_value") else None
                for d in inp.type.tensor_type.shape.dim]  # fmt: skip
        if isinstance(input_shape, dict) and inp.name in input_shape:
            dims = list(input_shape[inp.name])
        elif input_shape is not None and not isinstance(input_shape, dict) and i == 0:
            dims = list(input_shape)
        if any(d is None or d <= 0 for d in dims):
            raise ModelImportError(
                f"input {inp.name!r} has a dynamic shape {dims}; pass input_shape=... "
                "(tvm_freq compiles static shapes)"
            )
        shapes[inp.name] = [int(d) for d in dims]
    return shapes


def _from_onnx(proto, input_shape) -> ImportedModel:
    from tvm.relax.frontend.onnx import from_onnx
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    shapes = _onnx_inputs(proto, input_shape)
    if _has_runtime_shape_arithmetic(proto):
        proto = fold_shape_arithmetic(proto, shapes)
    known = _get_convert_map()
    missing = {n.op_type for n in proto.graph.node if n.op_type not in known}
    if missing:
        raise UnsupportedOpError(missing, "ONNX")
    try:
        mod = from_onnx(proto, shape_dict=shapes, keep_params_in_input=False)
    except Exception as err:
        raise ModelImportError(f"ONNX import failed: {err}") from err
    return _finish(mod, "onnx")


def _has_runtime_shape_arithmetic(proto) -> bool:
    """Whether the graph computes shapes or pads at run time (``Shape`` -> ... -> ``Pad``).

    TorchScript-based exporters write TF-style "same" padding this way; with static input
    shapes all of it is constant, but the Relax importer only takes constant pads.
    """
    produced_by_constant = {o for n in proto.graph.node if n.op_type == "Constant"
                            for o in n.output}  # fmt: skip
    constant = produced_by_constant | {t.name for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type in ("Shape", "Size"):
            return True
        if node.op_type == "Pad" and len(node.input) > 1 and node.input[1] not in constant:
            return True
    return False


def fold_shape_arithmetic(proto, shapes: dict[str, list[int]]):
    """Fold constant subgraphs with ONNX Runtime's basic offline graph optimisation.

    With the input shapes fixed, every ``Shape`` and the arithmetic on it is constant, so
    ONNX Runtime's constant folding turns computed pads into initializers. The basic level
    only folds constants, removes redundant nodes and fuses nodes into standard ONNX
    operators; it keeps the model's function (tests check it against ONNX Runtime).

    Parameters
    ----------
    proto : onnx.ModelProto
        The model; not modified.
    shapes : dict
        Static shape of every graph input.

    Returns
    -------
    onnx.ModelProto
        The folded model, with the given input shapes.
    """
    import tempfile

    import onnx
    import onnxruntime as ort

    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    for inp in fixed.graph.input:
        if inp.name in shapes:
            dims = inp.type.tensor_type.shape.dim
            for dim, size in zip(dims, shapes[inp.name], strict=True):
                dim.Clear()
                dim.dim_value = int(size)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with tempfile.TemporaryDirectory(prefix="tvm-freq-fold-") as tmp:
        opts.optimized_model_filepath = str(Path(tmp) / "folded.onnx")
        try:
            ort.InferenceSession(fixed.SerializeToString(), opts,
                                 providers=["CPUExecutionProvider"])  # fmt: skip
        except Exception as err:  # ORT raises its own Fail/InvalidGraph types
            raise ModelImportError(
                f"the ONNX model computes shapes at run time, and folding them with "
                f"ONNX Runtime failed: {err}"
            ) from None
        return onnx.load(opts.optimized_model_filepath)


def _from_torch(model, input_shape, example_inputs) -> ImportedModel:
    import torch
    from torch.export import export
    from tvm.relax.frontend.torch import from_exported_program

    if example_inputs is None:
        if input_shape is None:
            raise ModelImportError("a torch model needs example_inputs=... or input_shape=...")
        example_inputs = (torch.zeros(tuple(input_shape)),)
    elif isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    from .specnet import spectral_layers

    if spectral_layers(model):
        # The SpecNet training path (complex tensors, compact storage, a custom autograd
        # Function) cannot be exported; its modules provide a real-arithmetic lowering.
        from .specnet.relax_import import lower_specnet

        if len(example_inputs) != 1:
            raise ModelImportError("a Spec-network takes exactly one input")
        model = lower_specnet(model, example_inputs[0])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            program = export(model, tuple(example_inputs))
        try:
            mod = from_exported_program(program, keep_params_as_input=False)
        except AssertionError as err:
            msg = str(err)
            if msg.startswith("Unsupported function types"):
                ops = [s.strip(" '[]") for s in msg.split("[", 1)[1].split(",")]
                raise UnsupportedOpError(ops, "torch") from None
            raise ModelImportError(f"torch import failed: {msg}") from err
    finally:
        model.train(was_training)
    return _finish(mod, "torch")


def _from_irmodule(mod: tvm.IRModule) -> ImportedModel:
    if "main" not in mod.get_global_vars() and not any(
        gv.name_hint == "main" for gv in mod.get_global_vars()
    ):
        raise ModelImportError("the IRModule has no 'main' function")
    return _finish(mod, "relax")


def optimize(mod: tvm.IRModule) -> tvm.IRModule:
    """Inference simplifications every path gets: batch norm folded, constants folded.

    Parameters
    ----------
    mod : tvm.IRModule
        Relax module with weights bound as constants.

    Returns
    -------
    tvm.IRModule
        The simplified module.
    """
    seq = tvm.transform.Sequential(
        [
            # torch.export keeps batch_norm; fold it into the conv before it legalises
            # (it would otherwise legalise in training mode).
            relax.transform.FoldBatchnormToConv2D(),
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
            relax.transform.FoldConstant(),
            # ONNX Clip with constant bounds: one R.clip, bounds as immediates (faster).
            ScalarClipToClip(),
            relax.transform.DeadCodeElimination(),
        ]
    )
    return seq(mod)


def _finish(mod: tvm.IRModule, source: str) -> ImportedModel:
    main = mod["main"]
    names, shapes, dtypes = [], [], []
    for param in main.params:
        ty = param.ty
        if not isinstance(ty, relax.TensorType) or ty.shape is None:
            raise ModelImportError(f"input {param.name!r} is not a tensor of known shape")
        try:
            shape = tuple(int(d) for d in ty.shape.values)
        except TypeError:
            raise ModelImportError(
                f"input {param.name!r} has a dynamic shape {ty.shape}; pass input_shape=..."
            ) from None
        names.append(param.name)
        shapes.append(shape)
        dtypes.append(str(ty.dtype))
    return ImportedModel(optimize(mod), tuple(names), tuple(shapes), tuple(dtypes), source)
