"""tvm_freq's Relax passes (one pass per module), usable in any Relax pipeline."""

from .frequency_band_pointwise import FrequencyBandPointwise, LayerDecision, eligible_convs

__all__ = ["FrequencyBandPointwise", "LayerDecision", "eligible_convs"]
