"""ml-search: an Optuna study over the config's `search:` block."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ml_framework.cli._common import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, console, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ml-search",
        description="Hyperparameter search with Optuna over the `search:` block of a training config.",
        epilog="Examples:\n"
        "  ml-search --config configs/digits_config.yaml --n-trials 20\n"
        "  ml-search --config configs/digits_config.yaml --resume --n-trials 10\n"
        "  ml-search --config c.yaml --storage postgresql://user@host/db --join   # on every machine\n"
        "  ml-search --config c.yaml --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, required=True, help="training config with a `search:` block")
    p.add_argument("--n-trials", type=int, help="trials for the study (with --resume: trials to add)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--study-name", help="default: search.study_name or <dataset>_optimization")
    p.add_argument("--storage", help="sqlite:///f.db, postgresql://..., or journal:///f.log")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue an existing study")
    mode.add_argument(
        "--join", action="store_true", help="create the study or join it (many workers/machines)"
    )
    mode.add_argument("--overwrite", action="store_true", help="delete an existing study of that name first")
    p.add_argument(
        "--sampler",
        "--strategy",
        dest="sampler",
        help="sampler: grid, random, tpe, bayesian, cmaes, gp, qmc, nsga2, bruteforce, or a class name",
    )
    p.add_argument(
        "--pruner", help="pruner type: median, percentile, sha, hyperband, threshold, patient, wilcoxon, none"
    )
    p.add_argument("--seed", type=int, help="sampler seed")
    p.add_argument("--fold", type=int, help="data.fold: validate every trial on this fold")
    p.add_argument("--dry-run", action="store_true", help="print the resolved search space and exit")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed trial")
    p.add_argument(
        "--optimize",
        help="objectives, comma-separated (search.metrics): val_acc,latency_ms; "
        "also params, model_mb, train_time_s, val_loss, val_f1, ...",
    )
    p.add_argument("--directions", help="maximize/minimize per objective, comma-separated")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=TYPE:SPEC",
        help="add/replace a search parameter (repeatable): optimizer.lr=continuous:0.0001-0.1:log",
    )
    p.add_argument("--cv", type=int, metavar="K", help="cross-validate every trial over K folds")
    p.add_argument("--early-stopping", action="store_true", help="stop when the best stops improving")
    p.add_argument("--patience", type=int, help="finished trials without improvement before stopping")
    p.add_argument("--min-delta", type=float, help="smallest change that counts as an improvement")
    p.add_argument("--enqueue", type=Path, metavar="FILE", help="YAML list of parameter sets run first")
    p.add_argument("--n-workers", type=int, help="worker processes on this machine (search.n_workers)")
    p.add_argument("--gpus-per-trial", type=int, help="GPUs per worker (CUDA_VISIBLE_DEVICES round-robin)")
    p.add_argument(
        "overrides", nargs="*", metavar="dotted.key=value", help="config overrides (also search.*)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _search(args))


def _cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from ml_framework.search.registry import resolve_pruner_name, resolve_sampler_name

    out: dict[str, Any] = {}
    if args.n_trials is not None:
        out["search.n_trials"] = args.n_trials
    if args.timeout is not None:
        out["search.timeout"] = args.timeout
    if args.study_name:
        out["search.study_name"] = args.study_name
    if args.storage:
        out["search.storage"] = args.storage
    if args.fold is not None:
        out["data.fold"] = args.fold
    if args.n_workers is not None:
        out["search.n_workers"] = args.n_workers
    if args.sampler:
        out["search.sampler"] = {"type": resolve_sampler_name(args.sampler)}
    if args.pruner:
        out["search.pruner"] = {"type": resolve_pruner_name(args.pruner)}
    if args.optimize:
        out["search.metrics"] = [m.strip() for m in args.optimize.split(",")]
    if args.directions:
        out["search.directions"] = [d.strip() for d in args.directions.split(",")]
    if args.cv is not None:
        out["search.cross_validation.enabled"] = True
        out["search.cross_validation.n_folds"] = args.cv
    if args.early_stopping or args.patience is not None or args.min_delta is not None:
        out["search.early_stopping.enabled"] = True
    if args.patience is not None:
        out["search.early_stopping.patience"] = args.patience
    if args.min_delta is not None:
        out["search.early_stopping.min_delta"] = args.min_delta
    return out


def _search(args: argparse.Namespace) -> int:
    from ml_framework.config import apply_overrides, load_config, set_value

    cfg = apply_overrides(load_config(args.config), args.overrides)
    if cfg.search is None:
        from ml_framework.errors import ConfigError

        raise ConfigError(f"{args.config} has no `search:` block (create one with ml-init-config --optuna)")
    for key, value in _cli_overrides(args).items():
        if key in ("search.sampler", "search.pruner"):
            cfg.search[key.split(".")[1]] = value  # a new type takes none of the old type's kwargs
        else:
            set_value(cfg, key, value, where="command line")
    if args.resume and args.n_trials is None:
        cfg.search.n_trials = None  # type: ignore[assignment]  # resume: keep the study's own budget
    from ml_framework.search.space import parse_inline_param

    for text in args.param:  # --param NAME=TYPE:SPEC adds to or replaces the config's space
        name, spec = parse_inline_param(text)
        cfg.search.search_space[name] = spec

    from ml_framework.search.study import resolve_settings

    settings = resolve_settings(cfg, seed=args.seed)
    if args.enqueue is not None:
        from ml_framework.search.pareto import load_enqueue_file

        settings.enqueue = load_enqueue_file(args.enqueue, settings.space)
    out = console()
    for w in settings.warnings:
        out.print(f"[yellow]warning:[/] {w}")
    if args.dry_run:
        _print_space(out, settings)
        return EXIT_OK

    from ml_framework.data.folder import scan_image_folder

    scan_image_folder(cfg.data.data_dir)  # a missing data folder fails now, not in every trial
    from ml_framework.search.runner import run_search

    mode = "resume" if args.resume else "join" if args.join else "overwrite" if args.overwrite else "new"
    if settings.n_workers > 1:
        from ml_framework.search.parallel import run_parallel_search

        outcome = run_parallel_search(
            cfg, settings, mode=mode, config_path=str(args.config), fail_fast=args.fail_fast, console=out,
            gpus_per_trial=args.gpus_per_trial,
        )  # fmt: skip
    else:
        outcome = run_search(
            cfg, settings, mode=mode, config_path=str(args.config), fail_fast=args.fail_fast, console=out
        )
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome.ok else EXIT_FAILURE


def _print_space(out: Any, settings: Any) -> None:
    from rich.table import Table

    from ml_framework.search.space import describe, grid_size

    table = Table(title=f"search space of '{settings.study_name}'")
    table.add_column("parameter")
    table.add_column("distribution")
    for name, text in describe(settings.space):
        table.add_row(name, text)
    out.print(table)
    size = grid_size(settings.space)
    if size is not None:
        out.print(f"grid points: {size}")
    out.print(
        f"metric: {', '.join(settings.metrics)} ({', '.join(settings.directions)}); sampler: "
        f"{settings.sampler_spec.get('type')}; pruner: {settings.pruner_spec.get('type')}; "
        f"n_trials: {settings.n_trials}; storage: {settings.storage_url}\n(dry run: no study was created)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
