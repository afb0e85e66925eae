"""What every CLI shares: error reporting and exit codes."""

from __future__ import annotations

import argparse
import atexit
import gc
import sys
import warnings
from collections.abc import Callable

EXIT_OK = 0
EXIT_FAILURE = 1  # the work itself failed (e.g. every trial failed)
EXIT_USAGE = 2  # bad input: config, flag, data folder
EXIT_INTERRUPTED = 130
GC_THRESHOLD = 100_000  # allocations between collections of the youngest generation (CPython: 700)


def add_tracking_flags(p: argparse.ArgumentParser) -> None:
    """--track, --experiment, --project (ml-train and ml-search): the `tracking:` block."""
    g = p.add_argument_group("experiment tracking")
    g.add_argument(
        "--track",
        choices=("mlflow", "wandb", "none"),
        help='tracking.backend (pip install "ml_framework[mlflow]" or "[wandb]")',
    )
    g.add_argument("--experiment", help="tracking.experiment: MLflow experiment (default: the dataset name)")
    g.add_argument("--project", help="tracking.project: W&B project (default: the dataset name)")


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _freeze_at_exit() -> None:
    """At exit: collect the garbage once, close the SQLite files still open in WAL mode (their log
    goes back into the .db file), then freeze every object left, so the interpreter's shutdown does
    not scan them all again for cycles (about 0.4 s after a search). Not with triton loaded (by
    torch.compile): its nanobind bindings report every object of theirs left at exit as a leak."""
    gc.collect()
    storage = sys.modules.get("ml_framework.search.storage")
    if storage is not None:
        storage.close_wal_connections()
    if "triton" not in sys.modules:
        gc.freeze()


def run_cli(fn: Callable[[], int]) -> int:
    """Run a command body; user errors print one clear message, Ctrl-C exits 130."""
    from ml_framework.errors import UserError

    # Optuna's ExperimentalWarning (WilcoxonPruner, GPSampler options, ...) is about its API's
    # stability, which the config format hides from users; matched by text so optuna is not imported.
    warnings.filterwarnings("ignore", message=r".* is experimental \(supported from v")
    atexit.unregister(_freeze_at_exit)  # once per process, also when commands run in one process
    atexit.register(_freeze_at_exit)
    # A command's set-up (imports, config, table, study) allocates millions of objects that live as long
    # as it does: a collection every 700 allocations (CPython's default) rescans them hundreds of times,
    # about 0.2 s of every command's start. Every 100,000 is still often enough for a run's garbage.
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    try:
        return fn()
    except UserError as e:
        from rich.markup import escape  # messages hold brackets: pip install "ml_framework[ray]"

        console(stderr=True).print(f"[bold red]error:[/] {escape(str(e))}", markup=True, soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
