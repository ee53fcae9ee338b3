"""MetaSchedule tuning records, stored per target and reused across builds.

Layout: ``<root>/<target key>/database_workload.json`` and
``database_tuning_record.json`` (MetaSchedule's own JSON database, keyed by the
structural hash of each workload). Two stores are consulted, in this order:

1. the user's records, ``root`` = the ``records`` argument, else ``$TVM_FREQ_RECORDS``,
   else ``~/.cache/tvm_freq/records``; tuning appends here;
2. the records shipped in ``tvm_freq.schedules`` (``schedules/records/``), read-only.

MetaSchedule only ever appends to these files, so records already there are never
rewritten. A file that does not parse is reported with its line number and left
untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import tvm
from tvm.s_tir import meta_schedule as ms

from ._io import shipped_records_root
from .target import target_key

__all__ = [
    "RecordsError", "RecordStore", "default_records_root", "has_record", "shipped_records_root",
]  # fmt: skip

_FILES = ("database_workload.json", "database_tuning_record.json")


class RecordsError(RuntimeError):
    """A records directory that cannot be read or written."""


def default_records_root() -> Path:
    """Return the user's records root: ``$TVM_FREQ_RECORDS`` or ``~/.cache/tvm_freq/records``.

    Returns
    -------
    pathlib.Path
        The directory (it may not exist yet).
    """
    env = os.environ.get("TVM_FREQ_RECORDS")
    return Path(env) if env else Path.home() / ".cache" / "tvm_freq" / "records"


def _validate(directory: Path) -> int:
    """Parse every line of both database files; return the number of tuning records."""
    count = 0
    for name in _FILES:
        path = directory / name
        if not path.exists():
            continue
        if not path.is_file():
            raise RecordsError(f"{path} is not a file")
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise RecordsError(f"cannot read tuning records {path}: {err}") from None
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise RecordsError(
                    f"corrupt tuning records: {path}, line {lineno}: {err.msg}. The file was left "
                    "as it is; repair or move it, or pass another records directory."
                ) from None
            if not isinstance(row, list) or len(row) < 2:
                raise RecordsError(
                    f"corrupt tuning records: {path}, line {lineno} is not a MetaSchedule row. "
                    "The file was left as it is."
                )
            count += name == _FILES[1]
    return count


class RecordStore:
    """The tuning records a build reads and writes.

    Parameters
    ----------
    root : str or pathlib.Path, optional
        User records root (see module docs for the default).
    use_shipped : bool
        Also read the records shipped in ``tvm_freq.schedules``.
    """

    def __init__(self, root: str | Path | None = None, *, use_shipped: bool = True):
        self.root = Path(root).expanduser() if root is not None else default_records_root()
        self.use_shipped = use_shipped
        if self.root.exists() and not self.root.is_dir():
            raise RecordsError(f"records path {self.root} exists and is not a directory")

    def directory(self, target: tvm.target.Target) -> Path:
        """Return the user records directory for ``target``.

        Parameters
        ----------
        target : tvm.target.Target
            Compilation target.

        Returns
        -------
        pathlib.Path
            ``<root>/<target key>``.
        """
        return self.root / target_key(target)

    def _open(self, directory: Path, *, create: bool) -> ms.database.JSONDatabase | None:
        if not directory.exists() and not create:
            return None
        _validate(directory)
        if create:
            try:
                directory.mkdir(parents=True, exist_ok=True)
                # Root ignores permission bits, so probe with a real write.
                with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
                    pass
            except OSError as err:
                raise RecordsError(
                    f"records directory {directory} is not writable ({err.strerror}); pass "
                    "records=<a writable directory> or set TVM_FREQ_RECORDS. Records already "
                    "there were not touched."
                ) from None
        paths = [directory / f for f in _FILES]
        if not create and not all(p.exists() for p in paths):
            return None
        return ms.database.JSONDatabase(
            str(paths[0]), str(paths[1]), allow_missing=create, module_equality="structural"
        )

    def writable(self, target: tvm.target.Target) -> ms.database.JSONDatabase:
        """Open the user's database for ``target`` to append new records.

        Parameters
        ----------
        target : tvm.target.Target
            Compilation target.

        Returns
        -------
        tvm.s_tir.meta_schedule.database.JSONDatabase
            The database; raises :class:`RecordsError` when it is not writable or corrupt.
        """
        db = self._open(self.directory(target), create=True)
        assert db is not None
        return db

    def readable(self, target: tvm.target.Target) -> list[ms.database.Database]:
        """Open every database that has records for ``target`` (user first, then shipped).

        Parameters
        ----------
        target : tvm.target.Target
            Compilation target.

        Returns
        -------
        list of tvm.s_tir.meta_schedule.database.Database
            Possibly empty.
        """
        dirs = [self.directory(target)]
        if self.use_shipped:
            dirs.append(shipped_records_root() / target_key(target))
        dbs = [self._open(d, create=False) for d in dirs]
        return [db for db in dbs if db is not None]

    def union(
        self,
        target: tvm.target.Target,
        *,
        shipped_filter: Callable[[tvm.IRModule], bool] | None = None,
    ) -> ms.database.Database:
        """Return one database for lookups over the user's and the shipped stores.

        A workload with records in the user's store is answered from there (the best of
        the user's records), even when the shipped store has a faster-looking one: the
        user's records were measured on the user's machine. Other workloads are answered
        from the shipped store.

        Parameters
        ----------
        target : tvm.target.Target
            Compilation target.
        shipped_filter : callable, optional
            Keep only the shipped records whose workload (an ``IRModule``) it accepts.

        Returns
        -------
        tvm.s_tir.meta_schedule.database.Database
            The one database, an ordered union of several, or an empty in-memory one.
            Query it with ``query_tuning_record`` / ``query_schedule``, not
            ``has_workload`` (which union databases do not implement); see
            :func:`has_record`.
        """
        user = self._open(self.directory(target), create=False)
        shipped = None
        if self.use_shipped:
            shipped = self._open(shipped_records_root() / target_key(target), create=False)
        if shipped is not None and shipped_filter is not None:
            kept = ms.database.MemoryDatabase(module_equality="structural")
            for rec in shipped.get_all_tuning_records():
                if shipped_filter(rec.workload.mod):
                    workload = kept.commit_workload(rec.workload.mod)
                    kept.commit_tuning_record(ms.database.TuningRecord(
                        rec.trace, workload, rec.run_secs, rec.target, rec.args_info))  # fmt: skip
            shipped = kept
        dbs = [db for db in (user, shipped) if db is not None]
        if not dbs:
            return ms.database.MemoryDatabase()
        return dbs[0] if len(dbs) == 1 else ms.database.OrderedUnionDatabase(*dbs)


def has_record(db: ms.database.Database, mod: tvm.IRModule, target: tvm.target.Target,
               name: str) -> bool:
    """Say whether ``db`` holds a tuning record for the workload ``mod``.

    Works for every kind of database (plain, union, ordered union): a workload may also be
    in a database without any record, for example after an interrupted tuning run.

    Parameters
    ----------
    db : tvm.s_tir.meta_schedule.database.Database
        The database, e.g. from :meth:`RecordStore.union`.
    mod : tvm.IRModule
        The workload (a task's dispatched module).
    target : tvm.target.Target
        Compilation target.
    name : str
        Task name (used by MetaSchedule only for its logs).

    Returns
    -------
    bool
        True when a record exists.
    """
    return db.query_tuning_record(mod, target, name) is not None
