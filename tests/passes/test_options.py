"""FreqOptions: the pass's options as one frozen value; dicts still accepted."""

from __future__ import annotations

import dataclasses

import pytest

from tvm_freq.passes import FreqOptions
from tvm_freq.passes.options import split_freq_options


def test_from_dict_and_defaults():
    assert FreqOptions.from_value(None) == FreqOptions()
    opts = FreqOptions.from_value({"force": True, "kernel": "staged"})
    assert opts == FreqOptions(force=True, kernel="staged")
    assert FreqOptions.from_value(opts) is opts
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.force = False  # type: ignore[misc]


def test_unknown_keys_and_bad_values_raise_clearly():
    with pytest.raises(TypeError, match=r"unknown freq_options \['max_group'\]"):
        FreqOptions.from_value({"max_group": 2})
    with pytest.raises(TypeError, match="FreqOptions or a dict"):
        FreqOptions.from_value([("force", True)])
    with pytest.raises(ValueError, match="min_saving"):
        FreqOptions(min_saving=1.0)
    with pytest.raises(ValueError, match="kernel"):
        FreqOptions(kernel="tiled")
    with pytest.raises(ValueError, match="max_groups"):
        FreqOptions(max_groups=0)


def test_latencies_are_split_off():
    opts, lat = split_freq_options({"min_saving": 0.1, "latencies": {0: (10.0, 6.0)}})
    assert opts == FreqOptions(min_saving=0.1) and lat == {0: (10.0, 6.0)}
    assert split_freq_options(FreqOptions()) == (FreqOptions(), None)
