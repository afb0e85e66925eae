"""Pick the data pipeline: `memory` (decoded uint8 cache) or `stream` (decode per batch).

`data.pipeline: auto` takes memory when the decoded set (images x channels x side², uint8) fits
`data.memory_budget_mb`, else stream. The default budget is half the RAM available now, less
`PER_WORKER_MB` per process (its model, batches and torch itself); a search with `n_workers`
concurrent workers gives each trial the budget for that many (`search.objective.trial_config`).
The decoded set counts once: every process memory-maps the same cache file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ml_framework.errors import ConfigError

PIPELINES = ("auto", "memory", "stream")
PER_WORKER_MB = 1024
AVAILABLE_SHARE = 0.5


def available_ram_mb() -> int:
    """MemAvailable from /proc/meminfo (Linux), else free physical pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20
    except (ValueError, OSError, AttributeError):
        return 4096


def default_budget_mb(n_workers: int = 1) -> int:
    """Half the available RAM less PER_WORKER_MB per concurrent worker (at least 0)."""
    return max(0, int(available_ram_mb() * AVAILABLE_SHARE) - PER_WORKER_MB * max(1, n_workers))


@dataclass(frozen=True)
class PipelineChoice:
    pipeline: str  # memory or stream
    reason: str
    decoded_mb: float
    budget_mb: int | None


def choose_pipeline(requested: str, decoded_bytes: int, budget_mb: int | None) -> PipelineChoice:
    """memory or stream, with the reason (printed and written to train.log)."""
    if requested not in PIPELINES:
        raise ConfigError(f"data.pipeline: '{requested}' is not one of {', '.join(PIPELINES)}")
    if budget_mb is not None and budget_mb < 0:
        raise ConfigError(f"data.memory_budget_mb={budget_mb} must be >= 0 (or null for the default)")
    size_mb = decoded_bytes / 2**20
    if requested != "auto":
        return PipelineChoice(requested, f"data.pipeline={requested}", size_mb, budget_mb)
    where = "data.memory_budget_mb" if budget_mb is not None else "default budget: half the available RAM"
    budget = budget_mb if budget_mb is not None else default_budget_mb()
    fits = size_mb <= budget
    reason = (
        f"data.pipeline=auto: the decoded images take {size_mb:.1f} MB, "
        f"{'within' if fits else 'over'} the {budget} MB budget ({where})"
    )
    return PipelineChoice("memory" if fits else "stream", reason, size_mb, budget)
