"""ScalarClipToClip: an imported ONNX ``Clip`` with constant bounds as one ``R.clip``.

TVM's ONNX importer lowers ``Clip(x, lo, hi)`` to ``call_tir(maximum, (x, lo))`` then
``call_tir(minimum, (., hi))``, with the bounds as 0-d constant *tensors*. Fused into a
conv, the kernel's epilogue then reads the bounds from buffers; ending in ``R.clip`` (the
torch front-end's ReLU6), whose bounds legalise to immediates, EfficientNet-Lite2's 130x130
expand ran 2.04x and six of its pointwise convs 1.39x faster
(``docs/results/zen5/layers-onnx-clip-vs-647198d.md``). This pass rewrites the pair, when
both bounds are float scalar constants, into ``R.clip(x, lo, hi)``; any other ``call_tir``
is left untouched.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, is_tuple, rewrite_call, wildcard

__all__ = ["ScalarClipToClip", "scalar_clip_bounds"]


def scalar_clip_bounds(
    min_call: relax.Call, max_call: relax.Call, lo: relax.Expr, hi: relax.Expr
) -> tuple[float, float] | None:
    """``(lo, hi)`` of ``minimum(maximum(x, lo), hi)`` lowered to ``call_tir``, or None.

    Eligible when the called PrimFuncs are the importer's ``maximum`` and ``minimum``
    (``maximum1``, ... after renaming) and both bounds are one-element float constants
    with ``lo <= hi``.

    Parameters
    ----------
    min_call, max_call : tvm.relax.Call
        The ``call_tir`` of ``minimum`` and of ``maximum``.
    lo, hi : tvm.relax.Expr
        Their second operands.

    Returns
    -------
    tuple of float or None
        The bounds, or None when the calls are not such a clip.
    """
    names = (max_call.args[0].name_hint, min_call.args[0].name_hint)
    if not (names[0].startswith("maximum") and names[1].startswith("minimum")):
        return None
    values = []
    for c in (lo, hi):
        if not isinstance(c, tvm.ir.expr.Constant):
            return None
        v = c.value.numpy()
        if v.dtype.kind != "f":
            return None
        if v.size != 1:
            return None  # a per-channel bound: not a clip
        values.append(float(v.reshape(-1)[0]))
    if values[0] > values[1]:
        return None
    return values[0], values[1]


@tvm.transform.module_pass(opt_level=0, name="ScalarClipToClip")
class ScalarClipToClip:
    """Rewrite ``call_tir(minimum, (call_tir(maximum, (x, lo)), hi))`` into ``R.clip``.

    Run it after constant folding (the importer guards the bounds against NaN with a
    ``where`` that folds away), on modules whose weights are bound as constants.
    """

    def __init__(self) -> None:
        self.x = wildcard()
        self.lo, self.hi = is_const(), is_const()
        self.max_call = is_op("relax.call_tir")(wildcard(), is_tuple([self.x, self.lo]))
        self.pattern = is_op("relax.call_tir")(wildcard(), is_tuple([self.max_call, self.hi]))

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        """Rewrite every Relax function of ``mod``.

        Parameters
        ----------
        mod : tvm.IRModule
            Relax module.

        Returns
        -------
        tvm.IRModule
            The module; the PrimFuncs no call uses any more are dropped.
        """

        def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
            x = matches[self.x]
            bounds = scalar_clip_bounds(expr, matches[self.max_call], matches[self.lo],
                                        matches[self.hi])  # fmt: skip
            same = isinstance(x.ty, relax.TensorType) and x.ty.dtype == expr.ty.dtype
            if bounds is None or not same:
                return expr
            return relax.op.clip(x, *bounds)

        updates = {}
        for gv, func in mod.functions.items():
            if isinstance(func, relax.Function):
                new = rewrite_call(self.pattern, rewriter, func)
                if not new.same_as(func):
                    updates[gv] = new
        if not updates:
            return mod
        mod = mod.clone()  # a pass must not change the module it was given
        for gv, func in updates.items():
            mod.update_func(gv, func)
        entries = [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, relax.Function)]
        return relax.transform.DeadCodeElimination(entries)(mod)
