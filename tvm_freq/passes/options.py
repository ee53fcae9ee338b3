"""Options of :class:`~tvm_freq.passes.FrequencyBandPointwise` as one frozen value.

:func:`tvm_freq.build` takes them as ``freq_options`` (a :class:`FreqOptions`, or a dict
of the same keys). This module imports neither TVM nor torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["FreqOptions", "split_freq_options"]


@dataclass(frozen=True)
class FreqOptions:
    """How :class:`~tvm_freq.passes.FrequencyBandPointwise` rewrites masked convs.

    Parameters
    ----------
    max_groups : int
        Most GEMMs per layer (bands are grouped; see ``tvm_freq.kernels.freq_pointwise``).
    min_saving : float
        Rewrite only when the frequency path saves at least this fraction of the dense
        MACs (or, with measured latencies, of the dense time), in ``[0, 1)``.
    force : bool
        Rewrite every masked conv, profitable or not (for tests and measurements).
    kernel : {"fused", "staged"}
        One fused kernel per layer (with the bias and ReLU6 epilogue folded in), or
        separate DCT / GEMM / IDCT kernels per band group.
    """

    max_groups: int = 4
    min_saving: float = 0.0
    force: bool = False
    kernel: str = "fused"

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_saving < 1.0:
            raise ValueError("min_saving must be in [0, 1)")
        if self.kernel not in ("fused", "staged"):
            raise ValueError(f"kernel must be 'fused' or 'staged', got {self.kernel!r}")
        if self.max_groups < 1:
            raise ValueError("max_groups must be >= 1")

    @classmethod
    def from_value(cls, value: FreqOptions | Mapping[str, Any] | None) -> FreqOptions:
        """A :class:`FreqOptions` from itself, a dict of its fields, or None (defaults).

        Parameters
        ----------
        value : FreqOptions, mapping or None
            The options.

        Returns
        -------
        FreqOptions
            The options.

        Raises
        ------
        TypeError
            For a mapping with keys that are not options, or a value of another type.
        """
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(
                f"freq_options must be a FreqOptions or a dict, got {type(value).__name__}"
            )
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise TypeError(f"unknown freq_options {unknown}; valid options are {names}")
        return cls(**value)

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of ``FrequencyBandPointwise``.

        Returns
        -------
        dict
            ``{name: value}``.
        """
        return asdict(self)


def split_freq_options(
    value: FreqOptions | Mapping[str, Any] | None,
) -> tuple[FreqOptions, dict[int, tuple[float, float]] | None]:
    """``freq_options`` as given to :func:`tvm_freq.build`: options and measured latencies.

    A dict may carry ``"latencies"`` (``{conv ordinal: (dense_us, freq_us)}``), as
    ``build``'s ``freq_options`` always accepted; they are passed to the pass separately.

    Parameters
    ----------
    value : FreqOptions, mapping or None
        The options.

    Returns
    -------
    tuple
        The options and the latencies (None when not given).
    """
    if isinstance(value, Mapping) and "latencies" in value:
        rest = {k: v for k, v in value.items() if k != "latencies"}
        return FreqOptions.from_value(rest), dict(value["latencies"])
    return FreqOptions.from_value(value), None
