"""ml-train: train a model from a config file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ml_framework.cli._common import EXIT_OK, console, run_cli

# Shortcut flags from seed 003 -> the dotted key they set.
FLAG_KEYS = {
    "lr": "optimizer.lr",
    "batch_size": "training.batch_size",
    "num_epochs": "training.num_epochs",
    "device": "training.device",
    "fold": "data.fold",
    "name": "output.name",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ml-train",
        description="Train a PyTorch model from a YAML config. Logs to TensorBoard under runs/<name>/.",
        epilog="Examples:\n  ml-train --config configs/digits_config.yaml\n"
        "  ml-train --config configs/digits_config.yaml --lr 0.01 --batch_size 64 model.dropout=0.3\n"
        "  ml-train --resume runs/my_run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="config YAML (optional with --resume: the run's config.yaml)")
    p.add_argument("--lr", type=float, help="optimizer.lr")
    p.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, help="training.batch_size")
    p.add_argument("--num_epochs", "--num-epochs", dest="num_epochs", type=int, help="training.num_epochs")
    p.add_argument("--device", help="training.device: auto, cpu, cuda, cuda:N")
    p.add_argument("--fold", type=int, help="data.fold: validate on this cross-validation fold")
    p.add_argument("--resume", type=Path, metavar="CKPT", help="checkpoint (or run dir) to continue exactly")
    p.add_argument("--name", help="run dir name under output.runs_dir (default: dataset_model_timestamp)")
    p.add_argument(
        "overrides", nargs="*", metavar="dotted.key=value", help="any config key, e.g. model.dropout=0.3"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _train(args))


def _train(args: argparse.Namespace) -> int:
    from ml_framework.config import apply_overrides, load_config
    from ml_framework.errors import ConfigError

    ckpt = None
    config_path = args.config
    if args.resume is not None:
        from ml_framework.training.rundir import resolve_resume

        ckpt, run_dir = resolve_resume(args.resume)
        config_path = config_path or run_dir / "config.yaml"
    if config_path is None:
        raise ConfigError("--config FILE is required (or --resume a run)")
    overrides: dict[str, object] = {}
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None and not (flag == "name" and ckpt is not None):
            overrides[key] = value
    cfg = apply_overrides(load_config(config_path, overrides), args.overrides)

    from ml_framework.training.progress import results_table
    from ml_framework.training.run import run_training

    out = console()
    out.print(f"[bold]ml-train[/] {config_path} -> {cfg.model.architecture} on {cfg.data.data_dir}")
    result = run_training(cfg, resume=ckpt, console=out)
    out.print(results_table(result.best, result.final, result.test, result.best_epoch))
    out.print(f"run dir: {result.run_dir}\ntensorboard --logdir {result.run_dir.parent}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
