"""A per-target cost model of the dense and the frequency pointwise kernels.

The MAC rule (rewrite a layer when its frequency path computes fewer MACs) misjudges
layers whose kernels run at different efficiencies: a frequency kernel whose epilogue
writes 7-wide block rows, or a dense kernel at a shape far from its peak. Measuring
both kernels (``profitability="measured"``) is right but costs two extra compiles per
build. This model sits between: the time of each kernel kind is a non-negative linear
function of what it computes and moves (:func:`layer_features`), with coefficients
fitted once per target from the kernel library's own in-network timings
(``benchmarks/calibrate_cost_model.py``) and stored beside the tuning records as
``cost_model.json``. :func:`tvm_freq.build` uses it by default when one exists for the
target (``profitability="auto"``).

This module imports neither TVM nor torch (fitting imports SciPy's NNLS).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ._io import atomic_write, shipped_records_root
from .band_plan import BandPlan

__all__ = [
    "COST_MODEL_FILE",
    "DENSE_FEATURES",
    "FREQ_FEATURES",
    "KernelCostModel",
    "LayerShape",
    "fit_cost_model",
    "layer_features",
    "cost_model_file",
    "load_cost_model",
    "resolve_cost_model",
    "shipped_cost_models",
]

#: File name of a target's cost model, in the target's records directory.
COST_MODEL_FILE = "cost_model.json"
#: What each coefficient of the dense model multiplies (one time each: us per unit).
DENSE_FEATURES = ("macs", "activation floats", "weight floats", "call")
#: Likewise for the fused frequency kernel.
FREQ_FEATURES = (
    "dct macs", "gemm macs", "idct macs", "output floats", "epilogue vector ops",
    "weight floats", "call",
)  # fmt: skip


@dataclass(frozen=True)
class LayerShape:
    """One masked pointwise conv, as the cost model sees it.

    Parameters
    ----------
    n, cin, cout, height, width : int
        Batch, channels and spatial size (stride 1, so input and output share it).
    block : int
        Macroblock size ``k``.
    dct_macs, gemm_macs, idct_macs : int
        What the fused kernel computes (:func:`tvm_freq.band_plan.kernel_macs`).
    cin_max, cout_max : int
        Widest input and output prefixes of the plan (the weights the kernel reads).
    """

    n: int
    cin: int
    cout: int
    height: int
    width: int
    block: int
    dct_macs: int
    gemm_macs: int
    idct_macs: int
    cin_max: int
    cout_max: int

    @classmethod
    def from_plan(cls, shape: Sequence[int], cout: int, plan: BandPlan, macs: object) -> LayerShape:
        """The shape of a layer from its plan and :func:`~tvm_freq.band_plan.kernel_macs`.

        Parameters
        ----------
        shape : sequence of 4 int
            Input ``(N, Cin, H, W)``.
        cout : int
            Output channels.
        plan : BandPlan
            The (aligned) plan.
        macs : tvm_freq.macs.LayerMacs
            Its MAC counts.

        Returns
        -------
        LayerShape
            The layer.
        """
        n, cin, h, w = (int(d) for d in shape)
        cin_max = max((g.cin for g in plan.groups), default=0)
        cout_max = max((g.cout for g in plan.groups), default=0)
        return cls(n, cin, int(cout), h, w, plan.k, int(macs.dct), int(macs.gemm),
                   int(macs.idct), cin_max, cout_max)  # fmt: skip


def _epilogue_lanes(height: int, width: int, k: int) -> int:
    """Floats per store of the fused kernel's epilogue, as its schedule vectorises it: a
    whole block when the image is one block wide, a block row otherwise, scalars when
    blocks overhang; a width that is not a power of two splits into several stores."""
    if height % k or width % k:
        return 1
    lanes = k * k if -(-width // k) == 1 else k
    return 1 << (min(lanes, 16).bit_length() - 1)


def layer_features(layer: LayerShape) -> tuple[np.ndarray, np.ndarray]:
    """The dense and the frequency kernel's features (:data:`DENSE_FEATURES`,
    :data:`FREQ_FEATURES`).

    Parameters
    ----------
    layer : LayerShape
        The layer.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        float64 feature vectors.
    """
    pixels = layer.n * layer.height * layer.width
    out = pixels * layer.cout
    dense = np.array([pixels * layer.cin * layer.cout, pixels * (layer.cin + layer.cout),
                      layer.cin * layer.cout, 1.0], dtype=np.float64)  # fmt: skip
    lanes = _epilogue_lanes(layer.height, layer.width, layer.block)
    freq = np.array([layer.dct_macs, layer.gemm_macs, layer.idct_macs, out, out / lanes,
                     layer.cin_max * layer.cout_max, 1.0], dtype=np.float64)  # fmt: skip
    return dense, freq


@dataclass(frozen=True)
class KernelCostModel:
    """Predicted microseconds of a layer's dense and fused frequency kernels.

    Parameters
    ----------
    target : str
        Target key the coefficients were measured on (``llvm-skylake-avx512-c1``).
    dense, freq : tuple of float
        Microseconds per unit of each feature (:data:`DENSE_FEATURES`,
        :data:`FREQ_FEATURES`), all >= 0.
    samples : int
        Layer timings the model was fitted to.
    source : str
        How it was calibrated (the command).
    """

    target: str
    dense: tuple[float, ...]
    freq: tuple[float, ...]
    samples: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.dense) != len(DENSE_FEATURES) or len(self.freq) != len(FREQ_FEATURES):
            raise ValueError(
                f"a cost model needs {len(DENSE_FEATURES)} dense and {len(FREQ_FEATURES)} "
                f"frequency coefficients, got {len(self.dense)} and {len(self.freq)}"
            )
        if min(*self.dense, *self.freq) < 0 or not np.all(np.isfinite([*self.dense, *self.freq])):
            raise ValueError("cost model coefficients must be finite and >= 0")

    def predict(self, layer: LayerShape) -> tuple[float, float]:
        """Predicted ``(dense_us, freq_us)`` of one layer.

        Parameters
        ----------
        layer : LayerShape
            The layer.

        Returns
        -------
        (float, float)
            Microseconds of the dense and the frequency kernel.
        """
        dense, freq = layer_features(layer)
        return float(dense @ np.asarray(self.dense)), float(freq @ np.asarray(self.freq))

    def freq_coefficient(self, feature: str) -> float:
        """Microseconds per unit of one of the fused kernel's features.

        Parameters
        ----------
        feature : str
            A name in :data:`FREQ_FEATURES` (``"gemm macs"``, ...).

        Returns
        -------
        float
            The coefficient.
        """
        if feature not in FREQ_FEATURES:
            raise ValueError(f"unknown feature {feature!r}; the features are {FREQ_FEATURES}")
        return self.freq[FREQ_FEATURES.index(feature)]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as JSON (atomically).

        Parameters
        ----------
        path : str or pathlib.Path
            File to write.

        Returns
        -------
        pathlib.Path
            The path.
        """
        data = {**asdict(self), "dense_features": DENSE_FEATURES, "freq_features": FREQ_FEATURES}
        text = json.dumps(data, indent=1) + "\n"
        return atomic_write(path, lambda tmp: tmp.write_text(text))

    @classmethod
    def load(cls, path: str | os.PathLike) -> KernelCostModel:
        """Read a model written by :meth:`save`.

        Parameters
        ----------
        path : str or pathlib.Path
            The JSON file.

        Returns
        -------
        KernelCostModel
            The model.

        Raises
        ------
        ValueError
            When the file is not a cost model of this version's features.
        """
        try:
            data = json.loads(Path(path).read_text())
            if tuple(data.pop("dense_features")) != DENSE_FEATURES or tuple(
                data.pop("freq_features")
            ) != FREQ_FEATURES:
                raise ValueError("its features are not this version's; recalibrate")
            return cls(target=data["target"], dense=tuple(data["dense"]),
                       freq=tuple(data["freq"]), samples=int(data.get("samples", 0)),
                       source=str(data.get("source", "")))  # fmt: skip
        except (OSError, KeyError, TypeError, json.JSONDecodeError, ValueError) as exc:
            raise ValueError(f"{path} is not a usable cost model: {exc}") from exc


def fit_cost_model(
    layers: Sequence[LayerShape],
    dense_us: Sequence[float],
    freq_us: Sequence[float],
    target: str,
    source: str = "",
) -> KernelCostModel:
    """Fit both kernels' coefficients to measured times (non-negative least squares).

    Each kernel is fitted on relative error (rows scaled by ``1 / time``), so small and
    large layers weigh alike: the decision depends on ratios.

    Parameters
    ----------
    layers : sequence of LayerShape
        Measured layers.
    dense_us, freq_us : sequence of float
        Their dense and frequency kernel times, in microseconds.
    target : str
        Target key.
    source : str
        How the times were measured.

    Returns
    -------
    KernelCostModel
        The fitted model.
    """
    from scipy.optimize import nnls  # a dependency of xgboost-cpu; only calibration fits

    if not layers or not len(layers) == len(dense_us) == len(freq_us):
        raise ValueError("give one dense and one frequency time per layer (at least one)")
    feats = [layer_features(layer) for layer in layers]
    coefs = []
    for which, times in ((0, dense_us), (1, freq_us)):
        t = np.asarray(times, dtype=np.float64)
        if np.any(t <= 0):
            raise ValueError("times must be > 0")
        x = np.stack([f[which] for f in feats])
        scale = x.max(axis=0)
        scale[scale == 0] = 1.0  # a feature that never occurs gets coefficient 0
        sol, _ = nnls((x / scale) / t[:, None], np.ones_like(t))
        coefs.append(tuple(float(v) for v in sol / scale))
    return KernelCostModel(target, coefs[0], coefs[1], len(layers), source)


def cost_model_file(cpu: str = "") -> str:
    """File name of a target's cost model: for every CPU, or calibrated on one CPU model.

    Parameters
    ----------
    cpu : str
        A CPU model name (:func:`tvm_freq.target.host_cpu`), or ``""`` for the model of
        the whole target.

    Returns
    -------
    str
        ``cost_model.json``, or ``cost_model.<cpu>.json``.
    """
    if cpu and not all(c.isalnum() or c in "-_" for c in cpu):
        raise ValueError(f"CPU name {cpu!r}: letters, digits, '-' and '_' only")
    return f"cost_model.{cpu}.json" if cpu else COST_MODEL_FILE


def load_cost_model(
    roots: Sequence[str | os.PathLike], key: str, cpu: str = ""
) -> KernelCostModel | None:
    """The first target cost model found under the records roots.

    In each root, the model calibrated on ``cpu`` comes before the target's own: one
    target (``skylake-avx512``) covers CPUs whose kernels cost differently.

    Parameters
    ----------
    roots : sequence of str or pathlib.Path
        Records roots in precedence order (the user's store, then the shipped one).
    key : str
        Target key (:func:`tvm_freq.target.target_key`).
    cpu : str
        The CPU model the build is for (:func:`tvm_freq.target.host_cpu`), or ``""``.

    Returns
    -------
    KernelCostModel or None
        The model, or None when no root has one for ``key``.
    """
    names = [cost_model_file(cpu), COST_MODEL_FILE] if cpu else [COST_MODEL_FILE]
    for root in roots:
        for name in names:
            path = Path(root) / key / name
            if path.is_file():
                return KernelCostModel.load(path)
    return None


def shipped_cost_models() -> list[str]:
    """Target keys of the cost models shipped with tvm_freq.

    Returns
    -------
    list of str
        Sorted keys, such as ``llvm-skylake-avx512-c1``.
    """
    root = shipped_records_root()
    return sorted(p.parent.name for p in root.glob(f"*/{COST_MODEL_FILE}"))


def resolve_cost_model(spec: KernelCostModel | str | os.PathLike) -> KernelCostModel:
    """A cost model given as itself, as a ``cost_model.json`` path, or as a target key.

    Parameters
    ----------
    spec : KernelCostModel or str or pathlib.Path
        A model; a file :meth:`KernelCostModel.save` wrote; or the key of a shipped
        model (:func:`shipped_cost_models`, as :func:`tvm_freq.target.target_key` names
        targets).

    Returns
    -------
    KernelCostModel
        The model.

    Raises
    ------
    ValueError
        When ``spec`` is neither an existing file nor a shipped key, or the file is not
        a usable cost model.
    """
    if isinstance(spec, KernelCostModel):
        return spec
    path = Path(spec)
    if path.is_file():
        return KernelCostModel.load(path)
    key = str(spec)
    if key in shipped_cost_models():
        return KernelCostModel.load(shipped_records_root() / key / COST_MODEL_FILE)
    raise ValueError(
        f"no cost model {key!r}: give a cost_model.json file or a shipped target key "
        f"({', '.join(shipped_cost_models()) or 'none shipped'}); "
        "benchmarks/calibrate_cost_model.py makes one"
    )
