"""tvm_freq's Relax passes (one pass per module), usable in any Relax pipeline.

``decisions`` (what the pass decided per layer) and ``options`` (its options) are plain
data; ``frequency_band_pointwise`` is the pass.
"""

from .decisions import DecisionReason, LayerDecision, format_layer_table
from .frequency_band_pointwise import FrequencyBandPointwise, eligible_convs
from .options import FreqOptions

__all__ = [
    "DecisionReason", "FreqOptions", "FrequencyBandPointwise", "LayerDecision", "eligible_convs",
    "format_layer_table",
]  # fmt: skip
