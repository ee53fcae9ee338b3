"""The Spec-networks of the paper and their spatial twins: LeNet, AlexNet, VGG-16, DenseNet.

Each model is written once; ``spectral=False`` builds the spatial twin with the same
parameter names and shapes. :func:`get_specnet` builds one by name
(:data:`SPECNET_NAMES`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import AvgPool, ConvAct, SpectralConv2d, ToSpatial
from .ops import PAPER_ACTIVATION, check_activation, check_beta

__all__ = [
    "SpecLeNet",
    "SpecAlexNet",
    "SpecVGG16",
    "SpecDenseNet",
    "SPECNET_NAMES",
    "get_specnet",
]


def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def _check_common(in_channels: int, num_classes: int, width: float, beta: float) -> None:
    if in_channels < 1 or num_classes < 1:
        raise ValueError("in_channels and num_classes must be >= 1")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    check_beta(beta)


_PARAMETERS = """    Parameters
    ----------
    in_channels, num_classes : int
        Input channels and classes.
    spectral : bool
        Spectral blocks (SpecNet) or the spatial twin.
    beta : float
        Threshold of the spectral blocks.
    width : float
        Channel multiplier.
    spatial_act : {"relu", "tanh"}
        Activation of the spatial twin's convs.
    activation : {"spectral_tanh", "spatial_relu"}
        Activation of the spectral blocks: the paper's spectral tanh (default) or the
        spatial ReLU inside the halo-crop round trip (beyond the paper; with it, a
        Spec-network at ``beta = 0`` computes exactly its ReLU twin).
"""


class _SpecBase(nn.Module):
    """A model's checks and forward pass; a subclass builds its layers in :meth:`_build`.

    A subclass docstring's ``{parameters}`` line stands for the parameter section of the
    arguments every model takes, documented once in ``_PARAMETERS``.
    """

    input_size = 32

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__doc__:
            cls.__doc__ = cls.__doc__.replace("    {parameters}\n", _PARAMETERS)

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        spectral: bool = True,
        beta: float = 1.0,
        width: float = 1.0,
        spatial_act: str = "relu",
        activation: str = PAPER_ACTIVATION,
    ):
        kw = self._start(in_channels, num_classes, spectral, beta, width, spatial_act, activation)
        self._build(num_classes, width, kw)

    def _start(
        self,
        in_channels: int,
        num_classes: int,
        spectral: bool,
        beta: float,
        width: float,
        spatial_act: str,
        activation: str,
    ) -> dict[str, Any]:
        # Module set-up and the checks every model makes; returns the ConvAct options.
        super().__init__()
        _check_common(in_channels, num_classes, width, beta)
        self.in_channels = in_channels
        self.activation = check_activation(activation)
        return dict(spectral=spectral, beta=beta, spatial_act=spatial_act, activation=activation)

    def _build(self, num_classes: int, width: float, kw: dict[str, Any]) -> None:
        raise NotImplementedError

    def _check_input(self, x: torch.Tensor) -> None:
        want = (self.in_channels, self.input_size, self.input_size)
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != want:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            shape = ", ".join(map(str, want))
            raise ValueError(f"expected an input of shape [B, {shape}], got {got}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify ``[B, C, 32, 32]`` images.

        Parameters
        ----------
        x : torch.Tensor
            Input batch.

        Returns
        -------
        torch.Tensor
            Logits ``[B, num_classes]``.
        """
        self._check_input(x)
        return self._logits(x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        # features -> spatial head -> classifier; DenseNet overrides this.
        return self.classifier(torch.flatten(self.head(self.features(x)), 1))


class SpecLeNet(_SpecBase):
    """LeNet-5 for 32x32 inputs: two 5x5 valid convs with 2x2 average pooling, 3 FC layers.

    ``width`` scales the convs and the hidden FC layers.

    {parameters}
    """

    def _build(self, num_classes: int, width: float, kw: dict[str, Any]) -> None:
        c1, c2 = _ch(6, width), _ch(16, width)
        self.features = nn.Sequential(
            ConvAct(self.in_channels, c1, 5, 0, **kw), AvgPool(2),
            ConvAct(c1, c2, 5, 0, **kw), AvgPool(2),
        )  # fmt: skip
        self.head = ToSpatial()
        h1, h2 = _ch(120, width), _ch(84, width)
        self.classifier = nn.Sequential(
            nn.Linear(c2 * 25, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(),
            nn.Linear(h2, num_classes),
        )  # fmt: skip


class SpecAlexNet(_SpecBase):
    """AlexNet for 32x32 inputs (5x5, 5x5, 3x3 x 3 convs; three 2x2 average pools).

    ``width`` scales the convs and the hidden FC layers.

    {parameters}
    """

    def _build(self, num_classes: int, width: float, kw: dict[str, Any]) -> None:
        c = [_ch(v, width) for v in (64, 192, 384, 256, 256)]
        self.features = nn.Sequential(
            ConvAct(self.in_channels, c[0], 5, **kw), AvgPool(2),
            ConvAct(c[0], c[1], 5, **kw), AvgPool(2),
            ConvAct(c[1], c[2], 3, **kw),
            ConvAct(c[2], c[3], 3, **kw),
            ConvAct(c[3], c[4], 3, **kw), AvgPool(2),
        )  # fmt: skip
        self.head = ToSpatial()
        h = _ch(1024, width)
        self.classifier = nn.Sequential(
            nn.Linear(c[4] * 16, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
            nn.Linear(h, num_classes),
        )  # fmt: skip


class SpecVGG16(_SpecBase):
    """VGG-16 for 32x32 inputs without batch norm (13 3x3 convs, 5 average pools, 1 FC).

    ``width`` scales the convs.

    {parameters}
    """

    CFG = (64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P")

    def _build(self, num_classes: int, width: float, kw: dict[str, Any]) -> None:
        layers: list[nn.Module] = []
        c = self.in_channels
        for v in self.CFG:
            if v == "P":
                layers.append(AvgPool(2))
            else:
                co = _ch(int(v), width)
                layers.append(ConvAct(c, co, 3, **kw))
                c = co
        self.features = nn.Sequential(*layers)
        self.head = ToSpatial()
        self.classifier = nn.Linear(c, num_classes)


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bottleneck: int, kw: dict):
        super().__init__()
        self.bottleneck = ConvAct(cin, bottleneck, 1, **kw)
        self.conv = ConvAct(bottleneck, growth, 3, **kw)

    def forward(self, feats: list) -> Any:
        return self.conv(self.bottleneck(feats))


class SpecDenseNet(_SpecBase):
    """DenseNet-BC for 32x32 inputs without batch norm (1x1 bottleneck + 3x3 per layer).

    Dense blocks pass the list of feature maps instead of a concatenated tensor, and both
    twins' 1x1 convs save the pieces rather than the concatenation (memory-efficient
    DenseNet), so the comparison isolates the feature-map representation.

    ``width`` multiplies the growth rate (and so every channel count).

    {parameters}
    depth : int
        Network depth, ``6 n + 4`` (three dense blocks of ``n`` bottleneck layers).
    growth : int
        Growth rate ``k`` before ``width``.
    compression : float
        Transition compression.
    head_size : int
        The final 8x8 map is average-pooled to ``head_size x head_size`` and flattened
        into the classifier: 1 is DenseNet's global average pool; 1, 2, 4 or 8.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        spectral: bool = True,
        beta: float = 1.0,
        width: float = 1.0,
        spatial_act: str = "relu",
        activation: str = PAPER_ACTIVATION,
        depth: int = 40,
        growth: int = 12,
        compression: float = 0.5,
        head_size: int = 1,
    ):
        kw = self._start(in_channels, num_classes, spectral, beta, width, spatial_act, activation)
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 with n >= 1, got {depth}")
        if not 0 < compression <= 1:
            raise ValueError("compression must be in (0, 1]")
        if head_size not in (1, 2, 4, 8):
            raise ValueError(f"head_size must be 1, 2, 4 or 8, got {head_size}")
        self.head_size = head_size
        n = (depth - 4) // 6
        k = _ch(growth, width)
        c = 2 * k
        self.stem = ConvAct(in_channels, c, 3, **kw)
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for b in range(3):
            layers = nn.ModuleList()
            for _ in range(n):
                layers.append(_DenseLayer(c, k, 4 * k, kw))
                c += k
            self.blocks.append(layers)
            if b < 2:
                co = max(1, int(c * compression))
                self.transitions.append(ConvAct(c, co, 1, **kw))
                c = co
        self.pool = AvgPool(2)
        self.head = ToSpatial()
        self.classifier = nn.Linear(c * head_size**2, num_classes)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.stem(x)]
        for b, layers in enumerate(self.blocks):
            for layer in layers:
                feats.append(layer(feats))
            if b < len(self.transitions):
                feats = [self.pool(self.transitions[b](feats))]
        out = self.head(feats)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, self.head_size), 1))


def _init_weights(model: nn.Module) -> None:
    # He init (fan_in, ReLU gain) for both twins: the standard choice for a plain ReLU
    # net without batch norm, and it keeps spectral magnitudes ~1 so that thresholds in
    # [0.5, 1.5] drop a fraction of the entries instead of all of them (PyTorch's default
    # conv init shrinks the signal ~3x per layer and a spectral net then drops everything).
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, SpectralConv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


_MODELS: dict[str, type[_SpecBase]] = {
    "lenet": SpecLeNet,
    "alexnet": SpecAlexNet,
    "vgg16": SpecVGG16,
    "densenet": SpecDenseNet,
}
SPECNET_NAMES: tuple[str, ...] = tuple(_MODELS)


def get_specnet(
    name: str,
    spectral: bool = True,
    beta: float = 1.0,
    width: float = 1.0,
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    seed: int | None = 0,
    **kwargs: Any,
) -> nn.Module:
    """Build a Spec-network or, with ``spectral=False``, its spatial twin.

    The same ``seed`` gives both twins the same initial weights (their parameters have
    the same names and shapes).

    Parameters
    ----------
    name : str
        One of :data:`SPECNET_NAMES` (a ``spec-`` prefix and dashes are accepted,
        e.g. ``"Spec-VGG-16"``).
    spectral : bool
        SpecNet blocks or ordinary ``Conv2d`` + ReLU.
    beta : float
        Threshold (ignored by the spatial twin).
    width : float
        Channel multiplier.
    in_channels, num_classes : int
        Input channels and classes.
    seed : int or None
        Seed for the initialisation; ``None`` uses the global RNG.
    **kwargs
        Passed to the model (``activation``, ``spatial_act``, DenseNet's
        ``depth``/``growth``/...).

    Returns
    -------
    torch.nn.Module
        The model in training mode.
    """
    key = name.lower().replace("-", "").replace("_", "")
    key = key[4:] if key.startswith("spec") else key
    if key not in _MODELS:
        raise ValueError(f"unknown SpecNet {name!r}; choose from {', '.join(SPECNET_NAMES)}")
    ctor = _MODELS[key]
    args = dict(
        in_channels=in_channels, num_classes=num_classes, spectral=spectral, beta=beta,
        width=width, **kwargs,
    )  # fmt: skip
    if seed is None:
        model = ctor(**args)
        _init_weights(model)
        return model
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ctor(**args)
        _init_weights(model)
    return model
