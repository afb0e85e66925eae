"""Files and paths: atomic writes (readers, and other processes writing the same file, such as
search workers refreshing the study outputs, only ever see a whole file) and the check of names that
become directories (a run name, a study name), so none can point outside its parent."""

from __future__ import annotations

import csv
import io
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ml_framework.errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9._-]+")


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A temporary path, unique to this process and moment, that replaces `path` when the block
    ends without an error (and is removed when it fails)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_target(path) as tmp:
        tmp.write_text(text)


def atomic_write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def check_name(name: str, where: str) -> str:
    """`name` if it is safe as one directory name: letters, digits, '.', '_' and '-', not '.' or '..'
    (so no path separator, no absolute path, nothing outside the parent dir). `where` names the flag
    or key for the error."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", "..") or len(name) > 200:
        raise ConfigError(
            f"{where}: {name!r} cannot be used as a directory name; use letters, digits, '.', '_' and '-' "
            "(at most 200, no '/', not '.' or '..')"
        )
    return name
