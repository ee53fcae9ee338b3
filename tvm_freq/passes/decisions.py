"""What :class:`~tvm_freq.passes.FrequencyBandPointwise` decided per layer, as typed data.

A :class:`LayerDecision` says whether a conv was rewritten (``rewritten``), why
(``reason``, a :class:`DecisionReason`) and on which numbers (``mac_ratio``,
``time_ratio``). Its ``decision`` property renders the one-line summary shown in
reports and tables (``"freq (0.58x MACs)"``, ``"dense: slower (1.20x time, 0.58x MACs)"``);
nothing parses that text back.

This module imports neither TVM nor torch.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["DecisionReason", "DecisionRule", "LayerDecision", "format_layer_table"]


class DecisionRule(enum.Enum):
    """What a build's layer decisions were based on (``BuildReport.rule``)."""

    #: The frequency path must compute fewer MACs than the dense conv.
    MACS = "macs"
    #: The target's kernel cost model predicted both kernels' times.
    MODEL = "model"
    #: Both kernels were timed in real runs.
    MEASURED = "measured"


class DecisionReason(enum.Enum):
    """Why a layer was (not) rewritten."""

    #: The mask file has no mask for this conv: dense.
    NO_MASK = "no mask"
    #: The frequency path costs too many MACs (the MAC model): dense.
    UNPROFITABLE = "unprofitable"
    #: Measured faster, but by less than ``min_saving``: dense.
    TOO_LITTLE_GAIN = "too little gain"
    #: Measured slower than (or as slow as) the dense kernel: dense.
    SLOWER = "slower"
    #: Saves MACs (the MAC model, no measurement): frequency.
    PROFITABLE_MACS = "profitable (MACs)"
    #: Measured faster than the dense kernel by at least ``min_saving``: frequency.
    FASTER = "faster"
    #: Not profitable, rewritten anyway (``force=True``): frequency.
    FORCED = "forced"
    #: The target's cost model predicts the frequency kernel slower: dense.
    PREDICTED_SLOWER = "predicted slower"
    #: The target's cost model predicts the frequency kernel faster: frequency.
    PREDICTED_FASTER = "predicted faster"
    #: The mask file is ``trained``: the model it comes from computes this layer banded.
    TRAINED = "trained under its mask"


#: Reasons of a dense layer, as they read in :attr:`LayerDecision.decision`.
_DENSE = (DecisionReason.NO_MASK, DecisionReason.UNPROFITABLE, DecisionReason.TOO_LITTLE_GAIN,
          DecisionReason.SLOWER, DecisionReason.PREDICTED_SLOWER)  # fmt: skip


@dataclass
class LayerDecision:
    """What the pass did with one eligible pointwise conv.

    ``mac_ratio`` (frequency-path MACs over dense MACs) is set for every masked layer,
    ``time_ratio`` (``freq_us / dense_us``) for layers with measured latencies, or with
    times predicted by the target's cost model (reasons ``PREDICTED_*``; ``dense_us`` and
    ``freq_us`` stay None then: they hold measurements only).
    """

    ordinal: int
    name: str
    cin: int
    cout: int
    height: int
    width: int
    block: int | None = None
    dense_macs: int = 0
    dct_macs: int = 0
    gemm_macs: int = 0
    idct_macs: int = 0
    rewritten: bool = False
    reason: DecisionReason = DecisionReason.NO_MASK
    mac_ratio: float | None = None
    time_ratio: float | None = None
    kernels: list[str] = field(default_factory=list)
    dense_us: float | None = None
    freq_us: float | None = None

    def __post_init__(self) -> None:
        self.reason = DecisionReason(self.reason)
        if self.rewritten == (self.reason in _DENSE):
            raise ValueError(f"reason {self.reason.name} contradicts rewritten={self.rewritten}")

    @property
    def freq_macs(self) -> int:
        """MACs of the frequency path (0 when not rewritten)."""
        return self.dct_macs + self.gemm_macs + self.idct_macs

    @property
    def decision(self) -> str:
        """One-line summary, e.g. ``"freq (0.58x MACs)"`` or ``"dense: no mask"``."""
        numbers = []
        if self.time_ratio is not None:
            predicted = self.reason in (DecisionReason.PREDICTED_FASTER,
                                        DecisionReason.PREDICTED_SLOWER)  # fmt: skip
            numbers.append(f"{self.time_ratio:.2f}x {'predicted ' if predicted else ''}time")
        if self.mac_ratio is not None:
            numbers.append(f"{self.mac_ratio:.2f}x MACs")
        detail = f" ({', '.join(numbers)})" if numbers else ""
        if self.rewritten:
            return f"freq{detail}"
        return f"dense: {self.reason.value}{detail}"

    def to_json(self) -> dict:
        """Return a JSON-serialisable dict (with the rendered ``decision`` for readers).

        Returns
        -------
        dict
            The decision.
        """
        d = asdict(self)
        d["reason"] = self.reason.name
        d["decision"] = self.decision
        return d

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LayerDecision:
        """Rebuild a decision written by :meth:`to_json`.

        Parameters
        ----------
        data : mapping
            A dict from :meth:`to_json`; dicts written before decisions were typed (a
            ``decision`` string only) are read too.

        Returns
        -------
        LayerDecision
            The decision.
        """
        d = dict(data)
        text = d.pop("decision", None)
        if "reason" in d:
            d["reason"] = DecisionReason[d["reason"]]
        elif text is not None:
            d.update(_legacy_fields(text))
        return cls(**d)


def _legacy_fields(text: str) -> dict[str, Any]:
    """Typed fields of a decision string of tvm_freq <= 0.1 reports (exported models)."""
    time = re.search(r"([\d.]+)x time", text)
    macs = re.search(r"([\d.]+)x MACs", text)
    out: dict[str, Any] = {
        "time_ratio": float(time.group(1)) if time else None,
        "mac_ratio": float(macs.group(1)) if macs else None,
    }
    if text.startswith("freq"):
        reason = DecisionReason.FASTER if time else DecisionReason.PROFITABLE_MACS
        return {**out, "rewritten": True, "reason": reason}
    why = text.removeprefix("dense: ").split(" (")[0]
    return {**out, "rewritten": False, "reason": DecisionReason(why)}


def format_layer_table(layers: Iterable[LayerDecision | Mapping[str, Any]]) -> str:
    """Render per-layer decisions as a Markdown table.

    Parameters
    ----------
    layers : iterable of LayerDecision or dict
        Decisions (dicts as written by :meth:`LayerDecision.to_json` are accepted).

    Returns
    -------
    str
        The table, with a total row.
    """
    rows = [
        "| # | layer | Cin->Cout @ HxW | k | dense MMAC | DCT | GEMM | IDCT | freq/dense "
        "| decision |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    dense_total = freq_total = 0
    for d in layers:
        d = d if isinstance(d, LayerDecision) else LayerDecision.from_json(d)
        freq = d.freq_macs
        used = freq if d.rewritten else d.dense_macs
        dense_total += d.dense_macs
        freq_total += used
        ratio = f"{freq / d.dense_macs:.2f}" if freq else "-"
        rows.append(
            f"| {d.ordinal} | {d.name} | {d.cin}->{d.cout} @ {d.height}x{d.width}"
            f" | {d.block or '-'} | {d.dense_macs / 1e6:.2f} | {d.dct_macs / 1e6:.2f} | "
            f"{d.gemm_macs / 1e6:.2f} | {d.idct_macs / 1e6:.2f} | {ratio} | {d.decision} |"
        )
    if dense_total:
        rows.append(
            f"| | **pointwise total** | | | {dense_total / 1e6:.2f} | | | | "
            f"{freq_total / dense_total:.2f} | |"
        )
    return "\n".join(rows)
