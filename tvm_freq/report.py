"""What :func:`tvm_freq.build` did: :class:`BuildReport` (tasks, records, tuning, layers).

Plain data, in a module of its own so that :mod:`tvm_freq.runtime` can rebuild the
report of an exported model and :mod:`tvm_freq.pipeline` can fill one in (the pipeline
imports the runtime, not the other way round).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .masks import MaskFile
from .passes.decisions import DecisionRule, LayerDecision, format_layer_table

__all__ = ["BuildReport"]


@dataclass
class BuildReport:
    """What :func:`build` did: tasks, records, tuning, and per-layer frequency decisions."""

    target: str
    source: str
    num_tasks: int = 0
    tasks_with_records: int = 0
    tasks_tuned: int = 0
    untuned_tasks: list[str] = field(default_factory=list)
    default_scheduled: list[str] = field(default_factory=list)
    trials_run: int = 0
    tune_seconds: float = 0.0
    compile_seconds: float = 0.0
    layers: list[LayerDecision] = field(default_factory=list)
    masks: MaskFile | None = None
    #: What the layer decisions were based on (None without masks).
    rule: DecisionRule | None = None

    def to_json(self) -> dict:
        """Return a JSON-serialisable dict.

        Returns
        -------
        dict
            The report.
        """
        d = dict(self.__dict__)
        d["layers"] = [x.to_json() for x in self.layers]
        d["masks"] = self.masks.to_dict() if self.masks is not None else None
        d["rule"] = self.rule.value if self.rule is not None else None
        return d

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BuildReport:
        """Rebuild a report written by :meth:`to_json` (e.g. the sidecar of an exported model).

        Parameters
        ----------
        data : mapping
            A dict from :meth:`to_json`.

        Returns
        -------
        BuildReport
            The report.
        """
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"build report has unknown fields {sorted(unknown)}")
        d = dict(data)
        d["layers"] = [LayerDecision.from_json(x) for x in d.get("layers") or []]
        masks = d.get("masks")
        d["masks"] = MaskFile.from_dict(masks, source="build report") if masks else None
        d["untuned_tasks"] = list(d.get("untuned_tasks") or [])
        d["default_scheduled"] = list(d.get("default_scheduled") or [])
        d["rule"] = DecisionRule(d["rule"]) if d.get("rule") else None
        return cls(**d)

    def __str__(self) -> str:
        lines = [
            f"target {self.target} ({self.source} model)",
            f"tasks: {self.num_tasks}, with records: {self.tasks_with_records}, "
            f"tuned now: {self.tasks_tuned} ({self.trials_run} trials, {self.tune_seconds:.0f} s), "
            f"untuned: {len(self.untuned_tasks)}, on a default schedule: "
            f"{len(self.default_scheduled)}",
        ]
        if self.rule is not None:
            lines.append(f"layer decisions: {self.rule.value}")
        if self.layers:
            lines.append(format_layer_table(self.layers))
        return "\n".join(lines)
