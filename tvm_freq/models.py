"""Model zoo in plain PyTorch: MobileNetV2 (ImageNet and CIFAR variants) and ResNeXt-29.

No torchvision: it has no CPU build here. Module names follow torchvision's
MobileNetV2 (``features.<i>.conv.<j>``) so that layer names in mask files read
the same way people already know.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ._io import atomic_write

__all__ = [
    "MobileNetV2", "ResNeXt29", "get_model", "MODEL_NAMES", "default_input_shape",
    "export_onnx", "bundled_onnx",
]  # fmt: skip


def _make_divisible(v: float, divisor: int = 8) -> int:
    # Same rounding as the reference MobileNetV2: never drop more than 10%.
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU(nn.Sequential):
    """Conv2d -> BatchNorm2d -> ReLU6."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 linear projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(cin, hidden, kernel=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al., 2018).

    Parameters
    ----------
    num_classes : int
        Classifier outputs.
    width_mult : float
        Channel width multiplier.
    cifar : bool
        CIFAR-style stem for 32x32 inputs: first conv and the 24-channel stage
        use stride 1 instead of 2, so the last feature map is 4x4 rather than 1x1.
    in_channels : int
        Input channels (3 for RGB; 1 for raw Fashion-MNIST).
    dropout : float
        Dropout before the classifier.
    """

    _CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
            (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]  # fmt: skip

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        cifar: bool = False,
        in_channels: int = 3,
        dropout: float = 0.2,
    ):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        cin = _make_divisible(32 * width_mult)
        last = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNReLU(in_channels, cin, stride=1 if cifar else 2)]
        for t, c, n, s in self._CFG:
            cout = _make_divisible(c * width_mult)
            if cifar and c == 24:
                s = 1
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(ConvBNReLU(cin, last, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


class ResNeXtBlock(nn.Module):
    """ResNeXt bottleneck: 1x1 -> grouped 3x3 -> 1x1 (expansion 2), with projection shortcut."""

    def __init__(self, cin: int, cardinality: int, bottleneck_width: int, stride: int):
        super().__init__()
        gw = cardinality * bottleneck_width
        cout = 2 * gw
        self.conv1 = nn.Conv2d(cin, gw, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(gw)
        self.conv2 = nn.Conv2d(gw, gw, 3, stride, 1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(gw)
        self.conv3 = nn.Conv2d(gw, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + self.shortcut(x))


class ResNeXt29(nn.Module):
    """ResNeXt-29 for 32x32 inputs (Xie et al., 2017): three stages of three blocks.

    Parameters
    ----------
    cardinality : int
        Number of groups in the 3x3 convs.
    bottleneck_width : int
        Channels per group in the first stage; doubles every stage.
    num_classes : int
        Classifier outputs.
    in_channels : int
        Input channels.
    """

    def __init__(
        self,
        cardinality: int = 32,
        bottleneck_width: int = 4,
        num_classes: int = 10,
        in_channels: int = 3,
    ):
        super().__init__()
        if cardinality < 1 or bottleneck_width < 1:
            raise ValueError("cardinality and bottleneck_width must be >= 1")
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin, width = 64, bottleneck_width
        stages = []
        for stride in (1, 2, 2):
            blocks = []
            for i in range(3):
                blocks.append(ResNeXtBlock(cin, cardinality, width, stride if i == 0 else 1))
                cin = 2 * cardinality * width
            stages.append(nn.Sequential(*blocks))
            width *= 2
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(cin, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1)
        return self.linear(out)


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


# name -> (constructor, default input shape NCHW)
_ZOO: dict[str, tuple[Callable[..., nn.Module], tuple[int, int, int, int]]] = {
    "mobilenetv2-224": (lambda **kw: MobileNetV2(**kw), (1, 3, 224, 224)),
    "mobilenetv2-192": (lambda **kw: MobileNetV2(**kw), (1, 3, 192, 192)),
    # No shipped records cover it: the untuned benchmark's model.
    "mobilenetv2-0.75-192": (
        lambda **kw: MobileNetV2(**{"width_mult": 0.75, **kw}), (1, 3, 192, 192)
    ),
    "mobilenetv2-cifar": (
        lambda **kw: MobileNetV2(**{"num_classes": 10, "cifar": True, **kw}),
        (1, 3, 32, 32),
    ),
    "resnext29-32x4d": (lambda **kw: ResNeXt29(**kw), (1, 3, 32, 32)),
}
MODEL_NAMES: tuple[str, ...] = tuple(_ZOO)


def get_model(name: str, *, seed: int | None = 0, **kwargs) -> nn.Module:
    """Build a zoo model in eval mode.

    Parameters
    ----------
    name : str
        One of :data:`MODEL_NAMES`.
    seed : int or None
        Seed for the random initialisation, so that a model built twice is the same
        model (and ONNX exports of it are byte-identical). ``None`` leaves the
        global RNG alone.
    **kwargs
        Passed to the model's constructor (``width_mult``, ``num_classes``,
        ``in_channels``, ``cardinality``, ...).

    Returns
    -------
    torch.nn.Module
        The model, in eval mode.
    """
    if name not in _ZOO:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    ctor, _ = _ZOO[name]
    if seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = ctor(**kwargs)
    else:
        model = ctor(**kwargs)
    return model.eval()


def default_input_shape(name: str, batch: int = 1) -> tuple[int, int, int, int]:
    """Return the NCHW input shape a zoo model is built for.

    Parameters
    ----------
    name : str
        One of :data:`MODEL_NAMES`.
    batch : int
        Batch size.

    Returns
    -------
    tuple of int
        ``(batch, channels, height, width)``.
    """
    if name not in _ZOO:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    _, shape = _ZOO[name]
    return (batch, *shape[1:])


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, ...]) -> Path:
    """Export a model to ONNX (opset 17, batch norm folded by the exporter).

    Parameters
    ----------
    model : torch.nn.Module
        Model in eval mode.
    path : str or pathlib.Path
        Output file; written atomically.
    input_shape : tuple of int
        Static NCHW input shape.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    import warnings

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter warns it is legacy
            # The TorchScript exporter folds batch norm into the convs, as deployed models are.
            torch.onnx.export(
                model.eval(), (torch.zeros(input_shape),), str(tmp), dynamo=False,
                input_names=["input"], output_names=["output"], opset_version=17,
            )  # fmt: skip

    return atomic_write(path, write)


def bundled_onnx(name: str = "mobilenetv2-224", cache_dir: str | Path | None = None) -> Path:
    """Return the ONNX file of a zoo model, exporting it once from its seeded weights.

    The bundled models are the zoo definitions with seed-0 weights, so the file is the
    same on every machine and matches the tuning records shipped in ``tvm_freq.schedules``.

    Parameters
    ----------
    name : str
        Zoo model name.
    cache_dir : str or pathlib.Path, optional
        Where to keep the file (default ``~/.cache/tvm_freq/models``).

    Returns
    -------
    pathlib.Path
        Path to ``<name>.onnx``.
    """
    root = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "tvm_freq" / "models"
    path = root / f"{name}-torch{torch.__version__.split('+')[0]}.onnx"
    if not path.exists():
        export_onnx(get_model(name), path, default_input_shape(name))
    return path


BUNDLED_CUTS = (20, 40)
"""Whole-network MAC cuts (percent) of the mask files bundled for ``tvm-freq bench``."""


def bundled_masks(name: str = "mobilenetv2-224", cut: int = 20, *, must_exist: bool = True) -> Path:
    """Return the bundled profiling-only mask file of a zoo model at a MAC cut.

    The files come from ``benchmarks/make_bundled_masks.py``: per-channel bands from the
    coefficient energy of real images, with the energy level searched so that the default
    build removes about ``cut`` percent of the whole network's MACs.

    Parameters
    ----------
    name : str
        Zoo model name.
    cut : int
        One of :data:`BUNDLED_CUTS`.
    must_exist : bool
        Raise when the file is missing (``False`` to get the path to write).

    Returns
    -------
    pathlib.Path
        ``tvm_freq/assets/masks/<name>-cut<cut>.json``.
    """
    path = Path(__file__).parent / "assets" / "masks" / f"{name}-cut{cut}.json"
    if must_exist and not path.is_file():
        raise FileNotFoundError(
            f"no bundled masks for {name} at a {cut}% cut (bundled: "
            f"{', '.join(p.stem for p in path.parent.glob('*.json')) or 'none'})"
        )
    return path
