"""What every CLI shares: error reporting and exit codes."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable

EXIT_OK = 0
EXIT_FAILURE = 1  # the work itself failed (e.g. every trial failed)
EXIT_USAGE = 2  # bad input: config, flag, data folder
EXIT_INTERRUPTED = 130


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


def run_cli(fn: Callable[[], int]) -> int:
    """Run a command body; user errors print one clear message, Ctrl-C exits 130."""
    from ml_framework.errors import UserError

    # Optuna's ExperimentalWarning (WilcoxonPruner, GPSampler options, ...) is about its API's
    # stability, which the config format hides from users; matched by text so optuna is not imported.
    warnings.filterwarnings("ignore", message=r".* is experimental \(supported from v")
    try:
        return fn()
    except UserError as e:
        from rich.markup import escape  # messages hold brackets: pip install "ml_framework[ray]"

        console(stderr=True).print(f"[bold red]error:[/] {escape(str(e))}", markup=True, soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
