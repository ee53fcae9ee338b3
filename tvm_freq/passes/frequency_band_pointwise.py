"""Relax pass: pruned pointwise convs -> truncated DCT -> banded dense GEMMs -> truncated IDCT.

Usable in any Relax pipeline::

    from tvm_freq.masks import load_masks
    from tvm_freq.passes import FrequencyBandPointwise
    mod = FrequencyBandPointwise(load_masks("masks.json"))(mod)  # then tvm.compile(mod, ...)

A conv is *eligible* when it is ``relax.nn.conv2d`` with a constant ``[Cout, Cin, 1, 1]``
float32 weight, stride 1, dilation 1, groups 1, no padding, NCHW/OIHW layouts and a
static input shape. Eligible convs are numbered in binding order (the ``ordinal`` of
the mask file); a mask is applied to the eligible conv with the same ordinal and
weight shape. Everything else is left untouched, and so is a masked conv whose
frequency path would cost at least as many MACs as the dense conv (profitability).
With the default ``kernel="fused"``, each rewritten layer becomes one ``call_tir`` of
``fused_pointwise`` (DCT, band GEMMs and IDCT of a macroblock back to back), and a
following constant bias ``add`` and ReLU6 ``clip`` are folded into it as its epilogue:
``FuseOps`` cannot fuse elementwise ops into a multi-stage kernel, so the pass does.
``kernel="staged"`` emits one DCT, GEMM and IDCT kernel per band group instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, is_tuple, rewrite_call, wildcard

from tvm_freq.kernels import freq_pointwise as K
from tvm_freq.kernels.freq_pointwise import COEF_ALIGN, PIX_ALIGN

from ..band_plan import kernel_macs
from ..cost_model import KernelCostModel, LayerShape
from ..dct import num_blocks
from ..macs import dense_pointwise_macs
from ..masks import LayerMask, MaskFile, MaskMismatchError
from .decisions import DecisionReason, LayerDecision, format_layer_table
from .options import FreqOptions
from .scalar_clip import scalar_clip_bounds

__all__ = [
    "FrequencyBandPointwise", "LayerDecision", "check_masks", "eligible_convs",
    "format_layer_table", "apply_masks_to_module", "plan_layers",
]  # fmt: skip


def _static_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return tuple(int(d) for d in ty.shape.values)
    except (TypeError, AttributeError):
        return None


def _is_eligible(call: relax.Call) -> bool:
    """1x1, stride 1, dilation 1, groups 1, no padding, NCHW/OIHW, static, constant fp32 weight."""
    if not isinstance(call, relax.Call) or call.op != tvm.ir.Op.get("relax.nn.conv2d"):
        return False
    data, weight = call.args
    attrs = call.attrs
    wshape, xshape = _static_shape(weight), _static_shape(data)
    return (
        isinstance(weight, tvm.ir.expr.Constant)
        and wshape is not None
        and xshape is not None
        and len(wshape) == 4
        and wshape[2:] == (1, 1)
        and [int(s) for s in attrs.strides] == [1, 1]
        and [int(d) for d in attrs.dilation] == [1, 1]
        and all(int(p) == 0 for p in attrs.padding)
        and int(attrs.groups) == 1
        and attrs.data_layout == "NCHW"
        and attrs.kernel_layout == "OIHW"
        and attrs.out_layout == "NCHW"
        and str(weight.ty.dtype) == "float32"
        and str(data.ty.dtype) == "float32"
    )


def eligible_convs(func: relax.Function) -> list[relax.Call]:
    """Return the eligible pointwise conv calls of ``func`` in binding order.

    Parameters
    ----------
    func : tvm.relax.Function
        A Relax function.

    Returns
    -------
    list of tvm.relax.Call
        Eligible ``conv2d`` calls; index = mask-file ordinal.
    """
    found: list[relax.Call] = []

    @relax.expr_functor.visitor
    class _Visitor(relax.PyExprVisitor):
        def visit_call_(self, call: relax.Call) -> None:  # noqa: N802 - TVM visitor API
            super().visit_call_(call)
            if _is_eligible(call):
                found.append(call)

    _Visitor().visit_expr(func)
    return found


@tvm.transform.module_pass(opt_level=0, name="FrequencyBandPointwise")
class FrequencyBandPointwise:
    """Rewrite masked pointwise convs into frequency-band kernels.

    Parameters
    ----------
    masks : tvm_freq.masks.MaskFile
        Frozen masks; ordinals and weight shapes must match the module's eligible convs.
    max_groups : int
        Most GEMMs per layer (bands are grouped; see ``tvm_freq.kernels.freq_pointwise``).
    min_saving : float
        Rewrite only when the frequency path saves at least this fraction of the dense
        MACs (0 = any saving).
    force : bool
        Rewrite every masked conv, profitable or not (for tests and measurements). A
        ``trained`` mask file (see :class:`tvm_freq.masks.MaskFile`) has every listed conv
        rewritten anyway.
    latencies : mapping of int to (float, float), optional
        Measured ``(dense_us, freq_us)`` per conv ordinal (see
        ``tvm_freq.build(..., profitability="measured")``). A layer listed here is
        rewritten when its frequency kernel is at least ``min_saving`` faster than its
        dense kernel, whatever the MACs say; other layers fall back to the cost model
        or the MAC model.
    kernel : {"fused", "staged"}
        One fused kernel per layer (with the bias and ReLU6 epilogue folded in), or
        separate DCT / GEMM / IDCT kernels per band group.
    cost_model : tvm_freq.cost_model.KernelCostModel, optional
        Predicts both kernels' times for the target (see :mod:`tvm_freq.cost_model`); a
        layer without measured latencies is rewritten when its predicted frequency time
        is at least ``min_saving`` below its predicted dense time. Without it (or with
        ``kernel="staged"``), the MAC model decides.

    ``max_groups``, ``min_saving``, ``force`` and ``kernel`` are the fields of
    :class:`tvm_freq.passes.FreqOptions` (``FrequencyBandPointwise(masks,
    **options.as_kwargs())``).
    """

    def __init__(
        self,
        masks: MaskFile,
        *,
        max_groups: int = 4,
        min_saving: float = 0.0,
        force: bool = False,
        latencies: Mapping[int, tuple[float, float]] | None = None,
        kernel: str = "fused",
        cost_model: KernelCostModel | None = None,
    ):
        if not isinstance(masks, MaskFile):
            raise TypeError(f"masks must be a tvm_freq.masks.MaskFile, got {type(masks).__name__}")
        # Validates the options (one set of checks for the pass and tvm_freq.build).
        self.options = FreqOptions(max_groups=max_groups, min_saving=min_saving, force=force,
                                   kernel=kernel)  # fmt: skip
        self.masks = masks
        self.max_groups = max_groups
        self.min_saving = min_saving
        self.force = force
        self.latencies = {int(i): (float(d), float(f)) for i, (d, f) in (latencies or {}).items()}
        if any(not (d > 0 and f > 0) for d, f in self.latencies.values()):
            raise ValueError("latencies must be positive (dense_us, freq_us) pairs")
        self.kernel = kernel
        if cost_model is not None and not isinstance(cost_model, KernelCostModel):
            raise TypeError(
                f"cost_model must be a tvm_freq.cost_model.KernelCostModel, got "
                f"{type(cost_model).__name__}"
            )
        # The model predicts the fused kernel only; staged kernels keep the MAC rule.
        self.cost_model = cost_model if kernel == "fused" else None
        self.decisions: list[LayerDecision] = []
        # Patterns: conv2d with a constant weight (eligibility is checked separately),
        # optionally followed by a constant bias add and a clip (the fused epilogue).
        self.data = wildcard()
        self.weight = is_const()
        self.pattern = is_op("relax.nn.conv2d")(self.data, self.weight)
        self.bias = is_const()
        self.with_bias = is_op("relax.add")(self.pattern, self.bias)
        self.clip_lo, self.clip_hi = wildcard(), wildcard()
        self.with_clip = is_op("relax.clip")(self.with_bias, self.clip_lo, self.clip_hi)
        # TVM's ONNX importer lowers Clip to call_tir(maximum, x, lo) -> call_tir(minimum, ., hi)
        # (tvm_freq's import turns it into R.clip, other Relax pipelines may not).
        self.tir_lo, self.tir_hi = is_const(), is_const()
        self.tir_max = is_op("relax.call_tir")(wildcard(), is_tuple([self.with_bias, self.tir_lo]))
        tir_min_args = is_tuple([self.tir_max, self.tir_hi])
        self.with_tir_clip = is_op("relax.call_tir")(wildcard(), tir_min_args)

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        """Apply the rewrite to ``main``.

        Parameters
        ----------
        mod : tvm.IRModule
            Relax module.
        _ctx : tvm.transform.PassContext
            Pass context.

        Returns
        -------
        tvm.IRModule
            The rewritten module.
        """
        builder = relax.BlockBuilder(mod)
        gv = mod.get_global_var("main")
        func = mod["main"]
        convs = eligible_convs(func)
        check_masks(self.masks, convs)
        plans = self._decide(convs)
        # Rewritten calls are rebuilt with new arguments, so layers are found by their
        # weight constant, which every rewrite keeps.
        todo = [(call.args[1], plan) for call, plan in zip(convs, plans, strict=True) if plan]

        def lookup(conv: relax.Expr) -> tuple[LayerMask, K.BandPlan] | None:
            for weight, plan in todo:
                if isinstance(conv, relax.Call) and conv.args[1].same_as(weight):
                    return plan
            return None

        def with_epilogue(clip: str | None):
            def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
                item = lookup(matches[self.pattern])
                bias = _channel_bias(matches[self.bias], matches[self.pattern])
                bounds = None
                if clip == "op":
                    bounds = (_const_float(matches[self.clip_lo]),
                              _const_float(matches[self.clip_hi]))  # fmt: skip
                elif clip == "tir":
                    bounds = scalar_clip_bounds(expr, matches[self.tir_max], matches[self.tir_lo],
                                                matches[self.tir_hi]) or (None, None)  # fmt: skip
                if item is None or bias is None or (bounds is not None and None in bounds):
                    return expr  # unsupported epilogue: leave it to the next, plainer pattern
                todo.remove(next(t for t in todo if t[1] is item))
                return self._emit(builder, matches[self.pattern], item, bias, bounds)

            return rewriter

        def plain(expr: relax.Expr, matches: dict) -> relax.Expr:
            item = lookup(expr)
            if item is None:
                return expr
            todo.remove(next(t for t in todo if t[1] is item))
            return self._emit(builder, expr, item, None, None)

        if self.kernel == "fused":
            func = rewrite_call(self.with_clip, with_epilogue("op"), func)
            func = rewrite_call(self.with_tir_clip, with_epilogue("tir"), func)
            func = rewrite_call(self.with_bias, with_epilogue(None), func)
        func = rewrite_call(self.pattern, plain, func)
        builder.update_func(gv, func)
        return builder.get()

    # -- eligibility and decisions ------------------------------------------------------

    def _decide(self, convs: list[relax.Call]) -> list[tuple[LayerMask, K.BandPlan] | None]:
        masks = {lm.ordinal: lm for lm in self.masks.layers}
        out: list[tuple[LayerMask, K.BandPlan] | None] = []
        self.decisions = []
        for i, call in enumerate(convs):
            n, cin, h, w = _static_shape(call.args[0])
            cout = _static_shape(call.args[1])[0]
            lm = masks.get(i)
            dec = LayerDecision(i, lm.name if lm else f"pointwise#{i}", cin, cout, h, w)
            dec.dense_macs = dense_pointwise_macs(h, w, cin, cout, n)
            self.decisions.append(dec)
            if lm is None:
                out.append(None)
                continue
            # What the kernels really compute (whole groups, aligned prefixes, one DCT over
            # the widest prefix when fused), not the ideal bands.
            plan, lmacs = kernel_macs(
                lm.kin, lm.kout, lm.block, (n, cin, h, w), cout,
                fused=self.kernel == "fused", max_groups=self.max_groups,
            )  # fmt: skip
            dec.block = lm.block
            dec.dct_macs, dec.gemm_macs, dec.idct_macs = lmacs.dct, lmacs.gemm, lmacs.idct
            dec.mac_ratio = dec.freq_macs / dec.dense_macs
            if i in self.latencies:
                # Measured kernels beat the MAC model: a dense kernel can be far from its
                # peak (badly tuned shapes), and a freq kernel's transforms are not free.
                dec.dense_us, dec.freq_us = self.latencies[i]
                dec.time_ratio = dec.freq_us / dec.dense_us
                if dec.freq_us >= dec.dense_us:
                    dec.reason = DecisionReason.SLOWER
                elif dec.freq_us >= dec.dense_us * (1.0 - self.min_saving):
                    dec.reason = DecisionReason.TOO_LITTLE_GAIN
                else:
                    dec.reason = DecisionReason.FASTER
            elif self.cost_model is not None:
                dense_us, freq_us = self.cost_model.predict(
                    LayerShape.from_plan((n, cin, h, w), cout, plan, lmacs)
                )
                dec.time_ratio = freq_us / dense_us if dense_us > 0 else None
                faster = freq_us < dense_us * (1.0 - self.min_saving)
                dec.reason = (DecisionReason.PREDICTED_FASTER if faster
                              else DecisionReason.PREDICTED_SLOWER)  # fmt: skip
            elif dec.freq_macs >= dec.dense_macs * (1.0 - self.min_saving):
                dec.reason = DecisionReason.UNPROFITABLE
            else:
                dec.reason = DecisionReason.PROFITABLE_MACS
            dec.rewritten = dec.reason in (DecisionReason.FASTER, DecisionReason.PROFITABLE_MACS,
                                           DecisionReason.PREDICTED_FASTER)  # fmt: skip
            if self.masks.trained and not dec.rewritten:
                # The model computes this layer banded: dense would be a different function.
                dec.rewritten, dec.reason = True, DecisionReason.TRAINED
            if self.force and not dec.rewritten:
                dec.rewritten, dec.reason = True, DecisionReason.FORCED
            out.append((lm, plan) if dec.rewritten else None)
        return out

    # -- rewrite -------------------------------------------------------------------------

    def _emit(
        self,
        builder: relax.BlockBuilder,
        call: relax.Call,
        item: tuple[LayerMask, K.BandPlan],
        bias: np.ndarray | None,
        clip: tuple[float, float] | None,
    ) -> relax.Expr:
        lm, plan = item
        data, weight = call.args
        n, cin, h, w = _static_shape(data)
        cout = lm.out_channels
        k = plan.k
        wnp = weight.value.numpy()
        dec = self.decisions[lm.ordinal]
        out_ty = relax.TensorType((n, cout, h, w), "float32")
        if not plan.groups:  # every coefficient pruned: the conv outputs zeros
            y: relax.Expr = relax.op.zeros(relax.ShapeExpr([n, cout, h, w]), "float32")
            if bias is not None:
                y = relax.op.add(y, relax.const(bias.reshape(1, cout, 1, 1)))
            if clip is not None:
                y = relax.op.clip(y, *clip)
            return y
        if self.kernel == "fused":
            groups = [(g.size, g.cin, g.cout) for g in plan.groups]
            func = K.fused_pointwise(n, cin, cout, h, w, k, groups, bias=bias is not None,
                                     clip=clip, coef_align=COEF_ALIGN,
                                     pix_align=PIX_ALIGN)  # fmt: skip
            # Opaque: FuseOps must not try to merge other ops into the multi-stage kernel.
            gv = _add(builder, func.with_attr("op_pattern", 8), "freq_fused")
            dec.kernels.append(gv.name_hint)
            epilogue = [e for e, on in (("bias", bias is not None), ("clip", clip)) if on]
            if epilogue:
                dec.kernels[-1] += f" (+{'+'.join(epilogue)})"
            consts = K.fused_constants(plan, wnp, bias, coef_align=COEF_ALIGN,
                                       pix_align=PIX_ALIGN)  # fmt: skip
            return relax.call_tir(gv, [data, *[relax.const(c) for c in consts]], out_ty)
        p = n * num_blocks(h, w, k)
        y = None
        for g in plan.groups:
            gv_dct = _add(builder, K.truncated_dct(n, cin, h, w, k, g.size, g.cin), "freq_dct")
            gv_gemm = _add(builder, K.band_gemm(g.size, g.cout, g.cin, p), "freq_gemm")
            gv_idct = _add(builder, K.truncated_idct(n, cout, h, w, k, g.size, g.cout), "freq_idct")
            dec.kernels += [gv_dct.name_hint, gv_gemm.name_hint, gv_idct.name_hint]
            perm = np.asarray(plan.perm_in[: g.cin], dtype="int32")
            basis_o, slot = K.idct_group_basis(plan, g)
            xf = relax.call_tir(
                gv_dct,
                [data, relax.const(K.dct_group_basis(plan, g)), relax.const(perm)],
                relax.TensorType((g.size, g.cin, p), "float32"),
            )
            yf = relax.call_tir(
                gv_gemm,
                [relax.const(K.group_weight(plan, wnp, g)), xf],
                relax.TensorType((g.size, g.cout, p), "float32"),
            )
            yg = relax.call_tir(gv_idct, [yf, relax.const(basis_o), relax.const(slot)], out_ty)
            y = yg if y is None else relax.op.add(y, yg)
        return y


def _channel_bias(bias: relax.Expr, conv: relax.Expr) -> np.ndarray | None:
    """The per-output-channel bias vector of ``conv + bias``, or None if it is not one."""
    if not isinstance(bias, tvm.ir.expr.Constant):
        return None
    value = bias.value.numpy()
    cout = _static_shape(conv.args[1])[0]
    if value.dtype != np.float32 or value.size != cout:
        return None
    if value.shape not in ((1, cout, 1, 1), (cout, 1, 1)):
        return None  # broadcast along another axis: not a channel bias
    return value.reshape(cout)


def _const_float(expr: relax.Expr) -> float | None:
    """The value of a constant scalar (clip bounds are ``IntImm`` / ``FloatImm``), else None."""
    if isinstance(expr, tvm.tirx.FloatImm | tvm.tirx.IntImm):
        return float(expr.value)
    return None


def check_masks(masks: MaskFile, convs: list[relax.Call] | tvm.IRModule) -> None:
    """Raise :class:`MaskMismatchError`, naming the layer, when masks do not fit the module.

    Parameters
    ----------
    masks : MaskFile
        The masks.
    convs : list of tvm.relax.Call or tvm.IRModule
        Eligible convs (or a module to find them in).
    """
    if isinstance(convs, tvm.IRModule):
        convs = eligible_convs(convs["main"])
    if masks.num_pointwise != len(convs):
        raise MaskMismatchError(
            f"mask file is for a model with {masks.num_pointwise} pointwise convs, "
            f"but this model has {len(convs)}"
        )
    for lm in masks.layers:
        wshape = _static_shape(convs[lm.ordinal].args[1])
        if tuple(wshape) != tuple(lm.weight_shape):
            raise MaskMismatchError(
                f"layer {lm.name!r} (pointwise conv #{lm.ordinal}): mask is for weight shape "
                f"{list(lm.weight_shape)}, the model has {list(wshape)}",
                layer=lm.name,
            )


def _add(builder: relax.BlockBuilder, func: tvm.tirx.PrimFunc, name: str) -> relax.GlobalVar:
    # Private: the builder names it (and dedups identical kernels across layers).
    return builder.add_func(func.without_attr("global_symbol"), name)


def plan_layers(mod: tvm.IRModule, masks: MaskFile, **options: Any) -> list[LayerDecision]:
    """What :class:`FrequencyBandPointwise` would do with each layer, without rewriting.

    Cheap (no kernels are generated), so mask sweeps can call it many times.

    Parameters
    ----------
    mod : tvm.IRModule
        Imported Relax module.
    masks : MaskFile
        The masks.
    **options : Any
        Options of :class:`FrequencyBandPointwise`.

    Returns
    -------
    list of LayerDecision
        One per eligible conv, with MACs and the decision.
    """
    convs = eligible_convs(mod["main"])
    check_masks(masks, convs)
    rewrite = FrequencyBandPointwise(masks, **options)
    rewrite._decide(convs)
    return rewrite.decisions


def apply_masks_to_module(
    mod: tvm.IRModule,
    *,
    masks: Any = None,
    **options: Any,
) -> tuple[tvm.IRModule, list[LayerDecision]]:
    """Run :class:`FrequencyBandPointwise` with masks from a path or a ``MaskFile``.

    Parameters
    ----------
    mod : tvm.IRModule
        Imported Relax module.
    masks : str, os.PathLike or MaskFile
        The masks.
    **options : Any
        ``max_groups``, ``min_saving``, ``force``, ``latencies``, ``kernel`` of
        :class:`FrequencyBandPointwise`.

    Returns
    -------
    tuple
        The rewritten module and the per-layer decisions.
    """
    from ..masks import load_masks

    maskfile = masks if isinstance(masks, MaskFile) else load_masks(masks)
    check_masks(maskfile, mod)  # here, so the error is not wrapped by the FFI
    rewrite = FrequencyBandPointwise(maskfile, **options)
    return rewrite(mod), rewrite.decisions
