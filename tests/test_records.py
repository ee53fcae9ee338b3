"""Tuning records: reused by a second build, never lost, clear errors when unusable."""

from __future__ import annotations

import warnings

import pytest
import torch

import tvm_freq
from tvm_freq import Tuning, UntunedWarning
from tvm_freq.records import RecordsError, RecordStore
from tvm_freq.target import host_target


def _tiny() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(8, 16, 1), torch.nn.ReLU()).eval()


def test_second_build_reuses_records_without_tuning(tmp_path):
    records = tmp_path / "records"
    tuning = Tuning(trials=4, max_trials_per_task=2, records=records, use_shipped=False,
                    num_trials_per_iter=2, progress=False)  # fmt: skip
    first = tvm_freq.build(_tiny(), input_shape=(1, 8, 8, 8), tuning=tuning)
    assert first.report.tasks_tuned == first.report.num_tasks > 0
    assert first.report.trials_run > 0
    assert not first.report.untuned_tasks
    directory = RecordStore(records).directory(host_target())
    db_files = sorted(p.name for p in directory.iterdir() if p.suffix == ".json")
    assert db_files == ["database_tuning_record.json", "database_workload.json"]

    with warnings.catch_warnings():
        warnings.simplefilter("error", UntunedWarning)  # fully tuned: no warning
        second = tvm_freq.build(_tiny(), input_shape=(1, 8, 8, 8), tuning=tuning)
    assert second.report.tasks_tuned == 0
    assert second.report.trials_run == 0
    assert second.report.tasks_with_records == second.report.num_tasks

    retune = Tuning(trials=2, max_trials_per_task=2, records=records, use_shipped=False,
                    num_trials_per_iter=2, progress=False, retune=True)  # fmt: skip
    third = tvm_freq.build(_tiny(), input_shape=(1, 8, 8, 8), tuning=retune)
    assert third.report.tasks_tuned == third.report.num_tasks
    assert third.report.trials_run > 0


def test_corrupt_records_are_reported_and_left_untouched(tmp_path):
    store = RecordStore(tmp_path, use_shipped=False)
    d = store.directory(host_target())
    d.mkdir(parents=True)
    (d / "database_workload.json").write_text('["1", "abc"]\n')
    bad = d / "database_tuning_record.json"
    bad.write_text('[0, {"trace": []}]\n{not json\n')
    before = bad.read_bytes()
    with pytest.raises(RecordsError, match="line 2"):
        tvm_freq.build(_tiny(), input_shape=(1, 8, 8, 8),
                       tuning=Tuning(records=tmp_path, use_shipped=False))  # fmt: skip
    assert bad.read_bytes() == before


def test_unwritable_records_directory_fails_before_tuning(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("records already here\n")
    # A path under a regular file can never be created, even by root.
    with pytest.raises(RecordsError, match="not writable"):
        tvm_freq.build(_tiny(), input_shape=(1, 8, 8, 8),
                       tuning=Tuning(trials=2, records=blocker / "sub", use_shipped=False))
    assert blocker.read_text() == "records already here\n"


def test_records_path_that_is_a_file_is_rejected(tmp_path):
    f = tmp_path / "records"
    f.write_text("x")
    with pytest.raises(RecordsError, match="not a directory"):
        RecordStore(f)
