"""Typed per-layer decisions: the rendered summary, JSON round trips, the layer table."""

from __future__ import annotations

import pytest

from tvm_freq.passes import DecisionReason, LayerDecision, format_layer_table
from tvm_freq.passes import frequency_band_pointwise as fbp

R = DecisionReason


def _dec(rewritten, reason, mac=None, time=None):
    return LayerDecision(3, "pw", 8, 16, 4, 4, block=4, dense_macs=512, dct_macs=64,
                         gemm_macs=128, idct_macs=64, rewritten=rewritten, reason=reason,
                         mac_ratio=mac, time_ratio=time)  # fmt: skip


@pytest.mark.parametrize(
    ("dec", "text"),
    [
        (_dec(False, R.NO_MASK), "dense: no mask"),
        (_dec(False, R.UNPROFITABLE, 1.25), "dense: unprofitable (1.25x MACs)"),
        (_dec(False, R.SLOWER, 0.58, 1.2), "dense: slower (1.20x time, 0.58x MACs)"),
        (_dec(False, R.TOO_LITTLE_GAIN, 0.58, 0.6),
         "dense: too little gain (0.60x time, 0.58x MACs)"),
        (_dec(True, R.PROFITABLE_MACS, 0.58), "freq (0.58x MACs)"),
        (_dec(True, R.FASTER, 0.58, 0.6), "freq (0.60x time, 0.58x MACs)"),
        (_dec(True, R.FORCED, 1.25), "freq (1.25x MACs)"),
    ],
)  # fmt: skip
def test_decision_renders_the_summary_and_round_trips(dec, text):
    assert dec.decision == text
    assert LayerDecision.from_json(dec.to_json()) == dec
    legacy = {k: v for k, v in dec.to_json().items()
              if k not in ("rewritten", "reason", "mac_ratio", "time_ratio")}  # fmt: skip
    old = LayerDecision.from_json(legacy)  # a report written before decisions were typed
    assert (old.rewritten, old.decision) == (dec.rewritten, text)


def test_reason_must_agree_with_rewritten():
    with pytest.raises(ValueError, match="contradicts"):
        _dec(True, R.SLOWER)


def test_layer_table_counts_rewritten_layers_only():
    table = format_layer_table([_dec(True, R.PROFITABLE_MACS, 0.5), _dec(False, R.NO_MASK)])
    assert "| freq (0.50x MACs) |" in table and "| dense: no mask |" in table
    assert table.splitlines()[-1].endswith("| 0.75 | |")  # (256 + 512) / 1024
    assert format_layer_table([d.to_json() for d in [_dec(False, R.NO_MASK)]]).count("\n") == 3


def test_old_module_reexports():
    assert fbp.LayerDecision is LayerDecision and fbp.format_layer_table is format_layer_table
