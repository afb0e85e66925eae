"""Study storage: the default SQLite file, any SQLAlchemy URL (PostgreSQL for many machines), or
Optuna's journal file (`journal:///relative/study.log`, `journal:////absolute/study.log`, the same
slashes as SQLite URLs). One `open_storage` for ml-search and ml-visualise; URLs are shown and
written only through `urls.mask_url`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ml_framework.errors import ConfigError
from ml_framework.fileio import check_name
from ml_framework.urls import hide_password, mask_url

JOURNAL_PREFIX = "journal:///"
SQLITE_PREFIX = "sqlite:///"
STORAGE_ENV = "ML_SEARCH_STORAGE"  # a storage URL kept out of shell history and `ps`
URL_FORMS = f"{SQLITE_PREFIX}path.db, postgresql://user@host/db or {JOURNAL_PREFIX}path.log"


def default_storage_url(runs_dir: str | Path = "runs") -> str:
    return f"{SQLITE_PREFIX}{Path(runs_dir) / 'optuna_studies' / 'optuna.db'}"


def storage_url(flag: str | None, configured: str | None, runs_dir: str | Path = "runs") -> str:
    """The storage a command uses: its --storage flag, else $ML_SEARCH_STORAGE, else the config's
    search.storage, else the default SQLite file under the runs dir."""
    return flag or os.environ.get(STORAGE_ENV) or configured or default_storage_url(runs_dir)


def study_root(runs_dir: str | Path = "runs") -> Path:
    return Path(runs_dir) / "optuna_studies"


def study_dir(study_name: str, runs_dir: str | Path = "runs") -> Path:
    """Where a study's outputs live: runs/optuna_studies/<study>/ (the name is one safe dir name)."""
    return study_root(runs_dir) / check_name(study_name, "study name (--study-name / search.study_name)")


def remove_study_dir(study_name: str, runs_dir: str | Path = "runs") -> None:
    """Delete the outputs of a study being replaced (--overwrite): only its own directory, and only
    when that resolves (symlinks followed) to a direct child of the study root."""
    path = study_dir(study_name, runs_dir)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or path.resolve().parent != study_root(runs_dir).resolve():
        raise ConfigError(
            f"--overwrite: {path} does not resolve to a folder inside {study_root(runs_dir)}; "
            "not deleting it (remove it yourself if it is really the study's)"
        )
    shutil.rmtree(path)


def sqlite_path(url: str) -> Path | None:
    """The file behind a `sqlite:///...` URL (None for other back ends and in-memory SQLite)."""
    if not url.startswith(SQLITE_PREFIX) or url[len(SQLITE_PREFIX) :].split("?")[0] in ("", ":memory:"):
        return None
    return Path(url[len(SQLITE_PREFIX) :].split("?")[0])


def journal_path(url: str) -> Path:
    """`journal:///runs/s.log` -> runs/s.log (relative to the working dir); `journal:////abs/s.log`
    -> /abs/s.log."""
    path = url[len(JOURNAL_PREFIX) :]
    if not path:
        raise ConfigError(f"storage {url}: no file; write {JOURNAL_PREFIX}path/study.log")
    return Path(path)


_SQLITE_HOOKED = False
# The SQLite connections switched to WAL, open or closed (a connection takes no weak reference):
# `close_wal_connections` closes them when the process exits.
_WAL_CONNECTIONS: list[Any] = []


def _is_open(conn: Any) -> bool:
    import sqlite3

    try:
        conn.in_transaction  # noqa: B018  # raises on a closed connection
    except sqlite3.ProgrammingError:
        return False
    return True


def close_wal_connections() -> None:
    """Close every SQLite connection still open in WAL mode; the last one to close a database folds
    its write-ahead log back into the .db file (a copy of the .db alone then holds every trial)."""
    for conn in _WAL_CONNECTIONS:
        conn.close()
    _WAL_CONNECTIONS.clear()


def _sqlite_engine_kwargs() -> dict[str, Any]:
    """Wait for locks instead of failing with 'database is locked', and use WAL so readers never
    block the writer: several local workers share one file."""
    global _SQLITE_HOOKED
    if not _SQLITE_HOOKED:
        import sqlite3

        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            if isinstance(dbapi_conn, sqlite3.Connection):
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=120000")
                cur.close()
                _WAL_CONNECTIONS[:] = [c for c in _WAL_CONNECTIONS if _is_open(c)]
                _WAL_CONNECTIONS.append(dbapi_conn)

        event.listen(Engine, "connect", on_connect)
        _SQLITE_HOOKED = True
    return {"connect_args": {"timeout": 120}}


def _local_file(path: Path, shown: str, must_exist: bool) -> None:
    """A storage file: it must exist to be read (never create an empty one for a reader); a writer
    gets its folder created."""
    if must_exist and not path.is_file():
        raise ConfigError(
            f"study storage {shown}: the file {path} does not exist. Run ml-search first, or pass the "
            f"storage the study was written to with --storage URL (or ${STORAGE_ENV})"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"study storage {shown}: cannot create the folder {path.parent}: {e.strerror}"
        ) from e


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
    must_exist: bool = False,
) -> Any:
    """An Optuna storage for `url`. With a heartbeat, a trial whose worker died is failed once its
    heartbeat is older than `grace_period` and re-queued (up to `max_retry` times). `must_exist`:
    a reader (ml-visualise) that must not create an empty storage file."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    shown = mask_url(url)
    if url.startswith("journal:"):
        if not url.startswith(JOURNAL_PREFIX):
            raise ConfigError(
                f"storage {shown}: write {JOURNAL_PREFIX}relative/path.log or {JOURNAL_PREFIX}/abs.log"
            )
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = journal_path(url)
        _local_file(path, shown, must_exist)
        try:
            backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        except OSError as e:
            raise ConfigError(f"cannot open study storage {shown}: {e}") from e
        return optuna.storages.JournalStorage(backend)
    if url.startswith(SQLITE_PREFIX):
        path = sqlite_path(url)
        if path is not None:
            _local_file(path, shown, must_exist)
        engine_kwargs = _sqlite_engine_kwargs()
    elif "://" in url:
        engine_kwargs = {"pool_pre_ping": True}
    else:
        raise ConfigError(f"storage '{shown}' is not a URL: use {URL_FORMS}")
    heartbeat: dict[str, Any] = {}
    if heartbeat_interval:
        heartbeat = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period or 3 * heartbeat_interval,
            "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=max_retry, inherit_intermediate_values=True
            ),
        }
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
    except Exception as e:  # sqlalchemy errors: bad driver, unreachable server, auth
        reason = hide_password(str(e).splitlines()[0] if str(e) else type(e).__name__, url)
        raise ConfigError(f"cannot open study storage {shown}: {reason}") from e


def set_user_attrs(trial: Any, attrs: dict[str, Any]) -> None:
    """`trial.set_user_attr(key, value)` for each of `attrs`, in one transaction on an RDB storage:
    each `set_user_attr` is a transaction of its own (about 2 ms on SQLite, several per trial). Other
    storages, or an Optuna without the RDB storage's per-attribute write, take them one by one."""
    import optuna

    backend = getattr(trial.storage, "_backend", trial.storage)  # optuna wraps RDBStorage in a cache
    write = getattr(backend, "_set_trial_attr_without_commit", None)
    if len(attrs) < 2 or not isinstance(backend, optuna.storages.RDBStorage) or write is None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    from optuna.storages._rdb.models import TrialUserAttributeModel
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(backend.scoped_session, True) as session:
        for key, value in attrs.items():
            write(session, TrialUserAttributeModel, trial._trial_id, key, value)
    trial._cached_frozen_trial.user_attrs.update(attrs)  # what Trial.set_user_attr keeps in step
