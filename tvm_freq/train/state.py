"""Where a training run stands: :class:`RunState`, what a checkpoint's ``state`` holds.

A checkpoint stores the state as the plain dict :meth:`RunState.to_dict` returns (the
same ten keys that checkpoints held before the dataclass existed), so checkpoints
written by either version load with :meth:`RunState.from_dict`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["RunState"]


@dataclass
class RunState:
    """Progress of a run through its phases, and the mask-learning controller's state.

    Parameters
    ----------
    phase : int
        Index of the current phase in :func:`~tvm_freq.train.build_phases`'s list.
    started : bool
        Whether the current phase's start-up (wrap, squash, evaluations) has run.
    epoch, step : int
        Epoch within the phase, and step (global batch) within the epoch.
    global_step : int
        Optimizer steps over the whole run.
    elapsed : float
        Seconds of training before the last checkpoint.
    masks_done : bool
        The target MAC reduction was reached; later mask phases are skipped.
    mask_step : int
        Mask-learning steps over the whole run.
    lam : float
        Weight of the FCMask penalty, as the controller last set it.
    mask_cost0 : float, optional
        Pointwise MACs per dense MAC when mask learning started (the controller's plan
        starts there); ``None`` until then.
    """

    phase: int = 0
    started: bool = False
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    elapsed: float = 0.0
    masks_done: bool = False
    mask_step: int = 0
    lam: float = 0.0
    mask_cost0: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The state as a plain dict, the form checkpoints store.

        Returns
        -------
        dict
            One key per field.
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> RunState:
        """Read back what :meth:`to_dict` returned.

        Parameters
        ----------
        saved : dict
            A checkpoint's ``state``.

        Returns
        -------
        RunState
            The state.

        Raises
        ------
        ValueError
            When ``saved`` lacks a field or has keys that are no field.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        if set(saved) != names:
            missing, extra = sorted(names - set(saved)), sorted(set(saved) - names)
            raise ValueError(f"checkpoint state does not match: missing {missing}, extra {extra}")
        return cls(**saved)

    def next_phase(self) -> None:
        """Move to the start of the next phase."""
        self.phase += 1
        self.started = False
        self.epoch = 0
        self.step = 0

    def next_epoch(self) -> None:
        """Move to the start of the next epoch of this phase."""
        self.epoch += 1
        self.step = 0
