"""The ``tvm-freq`` command: options reach every build it makes."""

from __future__ import annotations

import types

import pytest

import tvm_freq.pipeline
from tvm_freq.cli import main


@pytest.mark.parametrize(
    ("flags", "profitability", "freq_options"),
    [
        ([], "auto", None),
        (["--profitability", "measured"], "measured", None),
        (["--profitability", "macs", "--force-masks"], "macs", {"force": True}),
    ],
)  # fmt: skip
def test_bench_passes_the_build_options_to_the_frequency_builds(
    monkeypatch, capsys, flags, profitability, freq_options
):
    calls = []

    def fake_build(model, **kwargs):
        calls.append(kwargs)
        if kwargs.get("masks") is None:  # the dense build: go on to the frequency builds
            return types.SimpleNamespace(report="dense report")
        raise RuntimeError("stop after the first frequency build")

    monkeypatch.setattr(tvm_freq.pipeline, "build", fake_build)
    assert main(["bench", "mobilenetv2-224", *flags]) == 2
    assert "stop after the first frequency build" in capsys.readouterr().err
    dense, freq = calls
    assert freq["masks"] is not None
    for kwargs in (dense, freq):
        assert kwargs["profitability"] == profitability
        assert kwargs["freq_options"] == freq_options
