"""Atomic file writes: readers, and other processes writing the same file (search workers
refreshing the study outputs), only ever see a whole file."""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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
