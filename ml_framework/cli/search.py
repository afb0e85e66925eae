"""ml-search: an Optuna study over the config's `search:` block."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ml_framework.cli._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    add_tracking_flags,
    console,
    run_cli,
)


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
    p.add_argument(
        "--n-trials",
        type=int,
        help="trials for the study (with --resume: trials to add; with --join: the study's total, "
        "raised when larger)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        help="the study starts no trial after this many seconds (with --resume: a new window)",
    )
    p.add_argument("--study-name", help="default: search.study_name or <dataset>_optimization")
    p.add_argument(
        "--storage",
        help="sqlite:///f.db, postgresql://..., or journal:///f.log (default: $ML_SEARCH_STORAGE, "
        "then search.storage)",
    )
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
        "--metric",
        help="the study's metric (search.metric): val_acc, val_loss; tables also accuracy, "
        "balanced_accuracy, "
        "f1, roc_auc, log_loss, rmse, mae, r2; minimised or maximised as its name says",
    )
    p.add_argument(
        "--optimize",
        help="objectives, comma-separated (search.metrics): val_acc,latency_ms; "
        "also params, model_mb, train_time_s, val_loss, val_f1, ...",
    )
    p.add_argument(
        "--directions", help="maximize/minimize per objective, comma-separated (default: from metric names)"
    )
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
    g = p.add_argument_group('Ray Tune engine (pip install "ml_framework[ray]")')
    g.add_argument("--engine", choices=("native", "ray"), help="search.engine: Optuna's own loop or Ray Tune")
    g.add_argument("--scheduler", help="search.ray.scheduler: fifo, asha, hyperband, pbt")
    g.add_argument(
        "--resources-per-trial", metavar="SPEC", help="search.ray.resources_per_trial: cpu:2,gpu:0.5"
    )
    g.add_argument("--max-concurrent", type=int, help="search.ray.max_concurrent: trials at once")
    g.add_argument("--address", help="search.ray.address: a running cluster (auto, ray://host:10001)")
    g.add_argument("--max-failures", type=int, help="search.ray.max_failures: restarts of a failed trial")
    add_tracking_flags(p)
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="override",
        help="config overrides, Hydra grammar (key=value, group=option, +key=value, ~key; also search.*)",
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
    storage = args.storage or _storage_from_env(args.overrides)
    if storage:
        out["search.storage"] = storage
    if args.fold is not None:
        out["data.fold"] = args.fold
    if args.n_workers is not None:
        out["search.n_workers"] = args.n_workers
    out.update(_ray_overrides(args))
    if args.sampler:
        out["search.sampler"] = {"type": resolve_sampler_name(args.sampler)}
    if args.pruner:
        out["search.pruner"] = {"type": resolve_pruner_name(args.pruner)}
    if args.metric:
        from ml_framework.training.metrics import canonical_metric

        out["search.metric"] = canonical_metric(args.metric.strip())
        if not args.directions:
            out["search.direction"] = None  # implied by the new metric's name
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
    for flag in ("track", "experiment", "project"):
        if getattr(args, flag):
            out["tracking.backend" if flag == "track" else f"tracking.{flag}"] = getattr(args, flag)
    return out


def _ray_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.engine:
        out["search.engine"] = args.engine
    if args.resources_per_trial:
        from ml_framework.search.ray_engine import parse_resources

        out["search.ray.resources_per_trial"] = parse_resources(args.resources_per_trial)
    for flag in ("max_concurrent", "address", "max_failures"):
        if getattr(args, flag) is not None:
            out[f"search.ray.{flag}"] = getattr(args, flag)
    if args.scheduler:
        out["search.ray.scheduler"] = {"type": args.scheduler.strip().lower()}
    return out


def _storage_from_env(overrides: list[str]) -> str | None:
    """$ML_SEARCH_STORAGE, unless the command line sets search.storage itself: the flag and a
    `search.storage=` override come first, then the variable, then the config file."""
    import os

    from ml_framework.search.storage import STORAGE_ENV

    if any(o.lstrip("+").startswith("search.storage=") for o in overrides):
        return None
    return os.environ.get(STORAGE_ENV) or None


def _search(args: argparse.Namespace) -> int:
    from ml_framework.config import load_config, set_value

    cfg = load_config(args.config, args.overrides)
    if cfg.search is None:
        from ml_framework.errors import ConfigError

        raise ConfigError(f"{args.config} has no `search:` block (create one with ml-init-config --optuna)")
    notes: list[str] = []  # warnings about the command line, shown with the settings' own
    for key, value in _cli_overrides(args).items():
        if key in ("search.sampler", "search.pruner"):
            from ml_framework.search.registry import switch_type

            kind = key.split(".")[1]
            old_type = cfg.search[kind].get("type")
            cfg.search[kind], dropped = switch_type(cfg.search[kind], value["type"], kind)
            if dropped:
                notes.append(
                    f"--{kind} {value['type']} takes no {', '.join(dropped)}: dropped from {key} ({old_type})"
                )
        elif key == "search.ray.scheduler":  # a new type drops the options of the config's scheduler
            old = dict(cfg.search.ray.scheduler)
            if old.get("type") != value["type"]:
                cfg.search.ray.scheduler = value
                if len(old) > 1:
                    notes.append(
                        f"--scheduler {value['type']}: dropped the options of {old.get('type')} ({old})"
                    )
        elif key == "search.ray.resources_per_trial":  # the flag gives the whole mapping
            cfg.search.ray.resources_per_trial = value
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
    from ml_framework.search.ray_engine import check_engine, ray_settings

    ray = ray_settings(cfg, settings) if check_engine(cfg.search.engine) == "ray" else None
    if args.enqueue is not None:
        from ml_framework.search.enqueue import load_enqueue_file

        settings.enqueue = load_enqueue_file(args.enqueue, settings.space)
    out = console()
    for w in [*notes, *settings.warnings]:
        out.print(f"[yellow]warning:[/] {w}")
    if args.dry_run:
        _print_space(out, settings)
        return EXIT_OK

    if cfg.data.format == "images":
        from ml_framework.data.folder import scan_image_folder

        scan_image_folder(cfg.data.data_dir)  # a missing data folder fails now, not in every trial
    else:
        from ml_framework.training.tabular import preflight

        preflight(cfg, settings.space.names, settings.metrics)  # bad table/model keys fail before the study
    from ml_framework.tracking.base import check_backend

    check_backend(cfg)  # an unknown or uninstalled tracker fails before the study exists
    from ml_framework.search.runner import run_search

    mode = "resume" if args.resume else "join" if args.join else "overwrite" if args.overwrite else "new"
    if ray is not None:
        from ml_framework.search.ray_engine import preflight, run_ray_search

        # Ray missing, bad scheduler options: fail before the study exists; the runtime starts meanwhile
        runtime = preflight(cfg, settings, ray)
        outcome = run_ray_search(
            cfg, settings, ray, runtime, mode=mode, config_path=str(args.config), fail_fast=args.fail_fast,
            console=out,
        )  # fmt: skip
    elif settings.n_workers > 1:
        from ml_framework.search.parallel import run_parallel_search

        outcome = run_parallel_search(
            cfg, settings, mode=mode, config_path=str(args.config), fail_fast=args.fail_fast, console=out,
        )  # fmt: skip
    else:
        outcome = run_search(
            cfg, settings, mode=mode, config_path=str(args.config), fail_fast=args.fail_fast, console=out
        )
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome.ok else EXIT_FAILURE


def _spec_text(spec: dict[str, Any]) -> str:
    """`RandomSampler(seed=3)`: a sampler/pruner spec as its constructor call."""
    args = ", ".join(f"{k}={v!r}" for k, v in spec.items() if k != "type")
    return f"{spec.get('type')}({args})"


def _print_space(out: Any, settings: Any) -> None:
    from rich.table import Table

    from ml_framework.search.space import describe, grid_size
    from ml_framework.search.storage import mask_url

    table = Table(title=f"search space of '{settings.study_name}'")
    table.add_column("parameter")
    table.add_column("distribution")
    for name, text in describe(settings.space):
        table.add_row(name, text)
    out.print(table)
    size = grid_size(settings.space)
    if size is not None:
        out.print(f"grid points: {size}")
    n_trials = "every grid point" if settings.n_trials is None and settings.grid else settings.n_trials
    out.print(
        f"metric: {', '.join(settings.metrics)} ({', '.join(settings.directions)}); sampler: "
        f"{_spec_text(settings.sampler_spec)}; pruner: {_spec_text(settings.pruner_spec)}; "
        f"n_trials: {n_trials}; storage: {mask_url(settings.storage_url)}\n"
        "(dry run: no study was created)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
