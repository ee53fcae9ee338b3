"""Tuning records: reused by a second build, never lost, clear errors when unusable."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from tvm.s_tir import meta_schedule as ms

import tvm_freq
import tvm_freq.pipeline
from tvm_freq import Tuning, UntunedWarning
from tvm_freq import records as records_mod
from tvm_freq.frontend import import_model
from tvm_freq.records import RecordsError, RecordStore, has_record
from tvm_freq.target import host_target


def _tiny() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(8, 16, 1), torch.nn.ReLU()).eval()


def _records_per_workload(directory) -> list[int]:
    lines = (directory / "database_tuning_record.json").read_text().splitlines()
    workloads = [json.loads(line)[0] for line in lines]
    return sorted(workloads.count(w) for w in set(workloads))


def test_second_build_reuses_records_without_tuning(tmp_path):
    records = tmp_path / "records"
    tuning = Tuning(trials=4, max_trials_per_task=2, records=records, use_shipped=False,
                    num_trials_per_iter=2, progress=False)  # fmt: skip
    net = _tiny()
    first = tvm_freq.build(net, input_shape=(1, 8, 8, 8), tuning=tuning)
    assert first.report.tasks_tuned == first.report.num_tasks == 1
    # The cap per task holds (tests/test_tuning.py checks the caps per design space).
    assert first.report.trials_run == 2
    assert not first.report.untuned_tasks
    directory = RecordStore(records).directory(host_target())
    db_files = sorted(p.name for p in directory.iterdir() if p.suffix == ".json")
    assert db_files == ["database_tuning_record.json", "database_workload.json"]
    assert _records_per_workload(directory) == [2]
    # The pointwise conv was tuned in its default schedule's design space (the register
    # tile is a sampled decision), not in MetaSchedule's generic one.
    assert "SampleCategorical" in (directory / "database_tuning_record.json").read_text()
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(first(x)), net(x), atol=1e-5)

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


def _copy_records(src, dst):
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("database_workload.json", "database_tuning_record.json"):
        shutil.copyfile(src / name, dst / name)


def test_default_path_with_shipped_store_tunes_then_reuses(tmp_path):
    # use_shipped is left on (the default): the lookup is a union of user and shipped
    # stores, which once crashed in UnionDatabase.HasWorkload.
    records = tmp_path / "records"
    tuning = Tuning(trials=4, max_trials_per_task=2, records=records, num_trials_per_iter=2,
                    progress=False)  # fmt: skip
    assert tuning.use_shipped
    first = tvm_freq.build(_tiny(), input_shape=(1, 8, 8, 8), tuning=tuning)
    assert first.report.trials_run > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntunedWarning)
        second = tvm_freq.build(_tiny(), input_shape=(1, 8, 8, 8), tuning=tuning)
    assert second.report.tasks_tuned == 0
    assert second.report.trials_run == 0
    assert second.report.tasks_with_records == second.report.num_tasks


def test_user_records_take_precedence_over_shipped(tmp_path, monkeypatch):
    target = host_target()
    # Tune once into a scratch store, then lay its records out as both stores.
    scratch = tmp_path / "scratch"
    tvm_freq.build(_tiny(), input_shape=(1, 8, 8, 8),
                   tuning=Tuning(trials=2, max_trials_per_task=2, records=scratch,
                                 use_shipped=False, num_trials_per_iter=2, progress=False))
    key = RecordStore(scratch).directory(target).name
    shipped, user = tmp_path / "shipped", tmp_path / "user"
    _copy_records(scratch / key, shipped / key)
    _copy_records(scratch / key, user / key)
    # Make the user's copy look 1000x slower than the shipped one: it must still win.
    path = user / key / "database_tuning_record.json"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        row[1][1] = [float(t) * 1000 for t in row[1][1]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(records_mod, "shipped_records_root", lambda: shipped)

    store = RecordStore(user)
    assert len(store.readable(target)) == 2  # both stores are consulted
    lookup = store.union(target)
    tasks = ms.relax_integration.extract_tasks(
        tvm_freq.pipeline.lower(import_model(_tiny(), input_shape=(1, 8, 8, 8)).mod, target),
        target,
    )
    slow = min(float(t) for row in rows for t in row[1][1])
    for task in tasks:
        mod = task.dispatched[0]
        assert has_record(lookup, mod, target, task.task_name)
        rec = lookup.query_tuning_record(mod, target, task.task_name)
        assert min(float(t) for t in rec.run_secs) >= slow  # the user's (slower) record
    # Only the shipped store: its faster record is what the lookup returns.
    only_shipped = RecordStore(tmp_path / "empty").union(target)
    for task in tasks:
        rec = only_shipped.query_tuning_record(task.dispatched[0], target, task.task_name)
        assert rec is not None and min(float(t) for t in rec.run_secs) < slow

    # A build whose workloads are in both stores reuses them: nothing is tuned.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntunedWarning)
        built = tvm_freq.build(_tiny(), input_shape=(1, 8, 8, 8),
                               tuning=Tuning(trials=2, records=user, progress=False))
    assert built.report.trials_run == 0
    assert built.report.tasks_with_records == built.report.num_tasks
