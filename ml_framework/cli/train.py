"""ml-train: train a model from a config file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ml_framework.cli._common import EXIT_FAILURE, EXIT_OK, add_tracking_flags, console, run_cli

# Shortcut flags from seed 003 -> the dotted key they set.
FLAG_KEYS = {
    "lr": "optimizer.lr",
    "batch_size": "training.batch_size",
    "num_epochs": "training.num_epochs",
    "device": "training.device",
    "fold": "data.fold",
    "name": "output.name",
    "track": "tracking.backend",
    "experiment": "tracking.experiment",
    "project": "tracking.project",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ml-train",
        description="Train a PyTorch model from a YAML config. Logs to TensorBoard under runs/<name>/.",
        epilog="Examples:\n  ml-train --config configs/digits_config.yaml\n"
        "  ml-train --config configs/digits_config.yaml --lr 0.01 --batch_size 64 model.dropout=0.3\n"
        "  ml-train --config configs/digits.yaml optimizer=sgd +model.kwargs.foo=1 ~model.dropout --cfg\n"
        "  ml-train --resume runs/my_run --num_epochs 20   # extends the schedule to 20 epochs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="config YAML (optional with --resume: the run's config.yaml)")
    p.add_argument("--lr", type=float, help="optimizer.lr")
    p.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, help="training.batch_size")
    p.add_argument("--num_epochs", "--num-epochs", dest="num_epochs", type=int, help="training.num_epochs")
    p.add_argument("--device", help="training.device: auto, cpu, cuda, cuda:N")
    p.add_argument("--fold", type=int, help="data.fold: validate on this cross-validation fold")
    p.add_argument(
        "--resume",
        type=Path,
        metavar="CKPT",
        help="checkpoint (or run dir) to continue; may change num_epochs, optimizer.*, scheduler.*",
    )
    p.add_argument("--name", help="run dir name under output.runs_dir (default: dataset_model_timestamp)")
    p.add_argument("--cfg", action="store_true", help="print the resolved config as YAML and exit")
    add_tracking_flags(p)
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="override",
        help="Hydra grammar: key=value, group=option (configs/<group>/<option>.yaml), +key=value, ~key",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _train(args))


def _train(args: argparse.Namespace) -> int:
    from ml_framework.config import apply_overrides, load_config, to_yaml
    from ml_framework.errors import ConfigError

    ckpt = None
    config_path = args.config
    if args.resume is not None:
        from ml_framework.training.rundir import resolve_resume

        ckpt, run_dir = resolve_resume(args.resume)
        if args.name is not None and args.name != run_dir.name:
            raise ConfigError(
                f"--name {args.name}: a resumed run continues in its own dir {run_dir}; "
                "drop --name, or start a new run with --config"
            )
        config_path = config_path or run_dir / "config.yaml"
    if config_path is None:
        raise ConfigError("--config FILE is required (or --resume a run)")
    flags = {key: getattr(args, flag) for flag, key in FLAG_KEYS.items() if getattr(args, flag) is not None}
    if ckpt is not None:
        flags.pop("output.name", None)  # the run keeps its dir (checked above)
    cfg = load_config(config_path, args.overrides)
    if flags:
        cfg = apply_overrides(cfg, flags)
    if args.cfg:
        print(to_yaml(cfg), end="")
        return EXIT_OK

    from ml_framework.tracking.train import train_with_tracking
    from ml_framework.training.callbacks import TrainingDiverged
    from ml_framework.training.progress import results_table

    out = console()
    source = cfg.data.data_dir if cfg.data.format == "images" else cfg.data.path
    out.print(f"[bold]ml-train[/] {config_path} -> {cfg.model.architecture} on {source}")
    try:
        result = train_with_tracking(cfg, resume=ckpt, console=out)
    except TrainingDiverged as e:  # failed work, not a bug: one line, exit 1 (train.log is written)
        console(stderr=True).print(f"[bold red]error:[/] training diverged: {e}", soft_wrap=True)
        return EXIT_FAILURE
    out.print(results_table(result.best, result.final, result.test, result.best_epoch))
    out.print(f"run dir: {result.run_dir}\ntensorboard --logdir {result.run_dir.parent}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
