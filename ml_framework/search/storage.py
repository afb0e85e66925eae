"""Study storage: the default SQLite file, any SQLAlchemy URL (PostgreSQL for many machines), or
Optuna's journal file (`journal:///path/study.log`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ml_framework.errors import ConfigError

JOURNAL_PREFIX = "journal:///"


def default_storage_url(runs_dir: str | Path = "runs") -> str:
    return f"sqlite:///{Path(runs_dir) / 'optuna_studies' / 'optuna.db'}"


def study_dir(study_name: str, runs_dir: str | Path = "runs") -> Path:
    """Where a study's outputs live: runs/optuna_studies/<study>/."""
    return Path(runs_dir) / "optuna_studies" / study_name


_SQLITE_HOOKED = False


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

        event.listen(Engine, "connect", on_connect)
        _SQLITE_HOOKED = True
    return {"connect_args": {"timeout": 120}}


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
    must_exist: bool = False,
) -> Any:
    """An Optuna storage for `url`. With a heartbeat, a trial whose worker died is failed once its
    heartbeat is older than `grace_period` and re-queued (up to `max_retry` times)."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url.startswith(JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = Path(url[len(JOURNAL_PREFIX) - 1 :])
        if must_exist and not path.is_file():
            raise ConfigError(f"study storage not found: {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(
            JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        )
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if must_exist and not path.is_file():
            raise ConfigError(f"study storage not found: {path} (is --storage / search.storage right?)")
        path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = _sqlite_engine_kwargs()
    elif "://" in url:
        engine_kwargs = {"pool_pre_ping": True}
    else:
        raise ConfigError(
            f"storage '{url}' is not a URL: use sqlite:///path.db, postgresql://user@host/db "
            f"or {JOURNAL_PREFIX}path.log"
        )
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
        raise ConfigError(f"cannot open study storage {url}: {str(e).splitlines()[0]}") from e
