"""The mask file: per-layer kept frequency bands, the contract with the compiler.

A mask file is JSON (see ``docs/mask-format.md``)::

    {"format": "tvm_freq.masks", "version": 1,
     "padding": "zero-bottom-right",
     "model": {"num_pointwise": 34, "name": "mobilenetv2-cifar"},
     "layers": [{"name": "features.2.conv.0.0", "ordinal": 3, "weight_shape": [96, 16, 1, 1],
                 "block": 4, "kin": [16, 3, 0, ...], "kout": [16, 16, ...]}]}

``ordinal`` is the 0-based index of the conv among the model's *eligible* pointwise
convs (1x1, stride 1, groups 1, dilation 1, padding 0) in forward execution order,
which is the order they appear in an exported graph. Input channel ``c`` keeps its
first ``kin[c]`` zigzag coefficients, output channel ``o`` its first ``kout[o]``.

This module is the NumPy/JSON contract only (it imports neither PyTorch nor
:mod:`tvm_freq.freq`); building a mask file from a model, loading one into a model and
exporting are in :mod:`tvm_freq.freq.export`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._io import atomic_write
from .dct import check_block

__all__ = [
    "FORMAT",
    "VERSION",
    "PADDING",
    "LayerMask",
    "MaskFile",
    "MaskMismatchError",
    "save_masks",
    "load_masks",
]

FORMAT = "tvm_freq.masks"
VERSION = 1
PADDING = "zero-bottom-right"


class MaskMismatchError(ValueError):
    """A mask file does not fit a model; ``layer`` names the layer that disagrees."""

    def __init__(self, message: str, layer: str | None = None):
        super().__init__(message)
        self.layer = layer


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class LayerMask:
    """Kept frequency bands of one pointwise conv.

    Parameters
    ----------
    name : str
        Qualified module name (``features.2.conv.0.0``).
    ordinal : int
        Index among eligible pointwise convs in forward execution order.
    weight_shape : sequence of int
        ``(Cout, Cin, 1, 1)``.
    block : int
        Macroblock size ``k``, 2 to 8.
    kin : sequence of int
        Kept zigzag coefficients per input channel, ``Cin`` values in ``[0, k*k]``.
    kout : sequence of int
        Kept zigzag coefficients per output channel, ``Cout`` values in ``[0, k*k]``.
    """

    name: str
    ordinal: int
    weight_shape: tuple[int, int, int, int]
    block: int
    kin: tuple[int, ...]
    kout: tuple[int, ...]

    def __post_init__(self) -> None:
        # Normalise lists from JSON into tuples so the dataclass stays hashable.
        object.__setattr__(self, "weight_shape", tuple(self.weight_shape))
        object.__setattr__(self, "kin", tuple(self.kin))
        object.__setattr__(self, "kout", tuple(self.kout))
        where = f"layer {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"layer name must be a non-empty string, got {self.name!r}")
        if not _is_int(self.ordinal) or self.ordinal < 0:
            raise ValueError(f"{where}: ordinal must be an int >= 0, got {self.ordinal!r}")
        ws = self.weight_shape
        if len(ws) != 4 or not all(_is_int(v) and v > 0 for v in ws) or ws[2:] != (1, 1):
            raise ValueError(f"{where}: weight_shape must be [Cout, Cin, 1, 1], got {list(ws)}")
        check_block(self.block, f"{where}: block", python_int=True)
        nc = self.block**2
        for what, counts, expect in (("kin", self.kin, ws[1]), ("kout", self.kout, ws[0])):
            if len(counts) != expect:
                raise ValueError(
                    f"{where}: {what} has {len(counts)} entries but weight_shape {list(ws)} "
                    f"has {expect} {'input' if what == 'kin' else 'output'} channels"
                )
            bad = [v for v in counts if not _is_int(v) or not 0 <= v <= nc]
            if bad:
                raise ValueError(
                    f"{where}: {what} counts must be ints in [0, {nc}] for block {self.block}, "
                    f"got {bad[0]!r}"
                )

    @property
    def in_channels(self) -> int:
        """``Cin``."""
        return self.weight_shape[1]

    @property
    def out_channels(self) -> int:
        """``Cout``."""
        return self.weight_shape[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON form.

        Returns
        -------
        dict
            Keys ``name, ordinal, weight_shape, block, kin, kout``.
        """
        return {
            "name": self.name,
            "ordinal": self.ordinal,
            "weight_shape": list(self.weight_shape),
            "block": self.block,
            "kin": list(self.kin),
            "kout": list(self.kout),
        }


@dataclass(frozen=True)
class MaskFile:
    """The masks of one model.

    Parameters
    ----------
    layers : sequence of LayerMask
        Masked layers (a subset of the eligible convs); stored sorted by ordinal.
    num_pointwise : int
        How many eligible pointwise convs the model has.
    model_name : str, optional
        Zoo name or any label.
    trained : bool
        The masks come from a model that applies them (written from PyTorch after
        training, distillation or :func:`tvm_freq.freq.squash`): that model computes every
        listed layer banded, so the compiler bands every listed layer too, whatever its
        profitability rule says. False for profiling-only masks (``tvm_freq.calibrate``),
        which leave the decision per layer to the compiler.
    """

    layers: tuple[LayerMask, ...]
    num_pointwise: int
    model_name: str | None = None
    trained: bool = False

    def __post_init__(self) -> None:
        layers = tuple(sorted(self.layers, key=lambda lm: lm.ordinal))
        object.__setattr__(self, "layers", layers)
        if not _is_int(self.num_pointwise) or self.num_pointwise < 0:
            raise ValueError(f"num_pointwise must be an int >= 0, got {self.num_pointwise!r}")
        if self.model_name is not None and not isinstance(self.model_name, str):
            raise ValueError(f"model name must be a string or null, got {self.model_name!r}")
        if not isinstance(self.trained, bool):
            raise ValueError(f"trained must be true or false, got {self.trained!r}")
        names, ordinals = set(), set()
        for lm in layers:
            if not isinstance(lm, LayerMask):
                raise ValueError(f"layers must be LayerMask objects, got {type(lm).__name__}")
            if lm.ordinal >= self.num_pointwise:
                raise ValueError(
                    f"layer {lm.name!r}: ordinal {lm.ordinal} is out of range for a model with "
                    f"{self.num_pointwise} pointwise convs"
                )
            if lm.name in names:
                raise ValueError(f"layer {lm.name!r} appears twice")
            if lm.ordinal in ordinals:
                raise ValueError(f"ordinal {lm.ordinal} appears twice (layer {lm.name!r})")
            names.add(lm.name)
            ordinals.add(lm.ordinal)

    def by_name(self) -> dict[str, LayerMask]:
        """Layers keyed by name.

        Returns
        -------
        dict of str to LayerMask
            Name to layer.
        """
        return {lm.name: lm for lm in self.layers}

    def to_dict(self) -> dict[str, Any]:
        """JSON form of the whole file.

        Returns
        -------
        dict
            The document :func:`save_masks` writes.
        """
        return {
            "format": FORMAT,
            "version": VERSION,
            "padding": PADDING,
            "model": {"num_pointwise": self.num_pointwise, "name": self.model_name,
                      "trained": self.trained},  # fmt: skip
            "layers": [lm.to_dict() for lm in self.layers],
        }

    @classmethod
    def from_dict(cls, doc: Any, source: str = "mask file") -> MaskFile:
        """Parse and validate a decoded JSON document.

        Parameters
        ----------
        doc : Any
            Decoded JSON.
        source : str
            How to name the document in error messages.

        Returns
        -------
        MaskFile
            The validated masks.
        """
        if not isinstance(doc, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(doc).__name__}")
        fmt = doc.get("format")
        if fmt != FORMAT:
            raise ValueError(f"{source}: unknown format {fmt!r}, expected {FORMAT!r}")
        version = doc.get("version")
        if version != VERSION:
            raise ValueError(
                f"{source}: unsupported mask file version {version!r}; "
                f"this tvm_freq reads version {VERSION}"
            )
        if doc.get("padding") != PADDING:
            raise ValueError(
                f"{source}: unsupported padding {doc.get('padding')!r}, expected {PADDING!r}"
            )
        model = doc.get("model")
        if not isinstance(model, dict) or "num_pointwise" not in model:
            raise ValueError(f"{source}: 'model' must be an object with 'num_pointwise'")
        layers_doc = doc.get("layers")
        if not isinstance(layers_doc, list):
            raise ValueError(f"{source}: 'layers' must be a list")
        layers = []
        keys = ("name", "ordinal", "weight_shape", "block", "kin", "kout")
        for i, ld in enumerate(layers_doc):
            if not isinstance(ld, dict):
                raise ValueError(f"{source}: layers[{i}] must be an object")
            missing = [k for k in keys if k not in ld]
            if missing:
                raise ValueError(
                    f"{source}: layers[{i}] ({ld.get('name', '?')!r}) lacks {', '.join(missing)}"
                )
            for k in ("weight_shape", "kin", "kout"):
                if not isinstance(ld[k], list):
                    raise ValueError(f"{source}: layers[{i}].{k} must be a list")
            try:
                layers.append(LayerMask(**{k: ld[k] for k in keys}))
            except ValueError as e:
                raise ValueError(f"{source}: {e}") from None
        try:
            # Files written before the flag existed read as profiling-only masks.
            return cls(tuple(layers), model["num_pointwise"], model.get("name"),
                       model.get("trained", False))  # fmt: skip
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None


def save_masks(path: str | os.PathLike, maskfile: MaskFile) -> Path:
    """Write a mask file (atomically), one layer per line.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.json``.
    maskfile : MaskFile
        Masks to write.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    if not isinstance(maskfile, MaskFile):
        raise ValueError(f"expected a MaskFile, got {type(maskfile).__name__}")
    doc = maskfile.to_dict()
    head = {k: v for k, v in doc.items() if k != "layers"}
    lines = ["{"]
    lines += [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    rows = [f"    {json.dumps(lm)}" for lm in doc["layers"]]
    lines.append('  "layers": [' + ("\n" + ",\n".join(rows) + "\n  " if rows else "") + "]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    path = Path(path)
    atomic_write(path, lambda p: p.write_text(text))
    return path


def load_masks(path: str | os.PathLike) -> MaskFile:
    """Read and validate a mask file.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_masks` (or by hand, same format).

    Returns
    -------
    MaskFile
        The masks.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Bad JSON, unknown format, unsupported version, counts out of range, or
        lengths that do not match ``weight_shape``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return MaskFile.from_dict(doc, str(path))
