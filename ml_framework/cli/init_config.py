"""ml-init-config: inspect an image folder and write a ready training config (+ a search block)."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_framework.cli._common import EXIT_OK, console, run_cli

if TYPE_CHECKING:
    from rich.console import Console

    from ml_framework.data.inspect import DatasetReport
    from ml_framework.initconfig.generate import Choices

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ml-init-config",
        description="Inspect DATA_DIR (images in DATA_DIR/raw/<class>/) or a table (.csv, .parquet) and "
        "write a training config that ml-train runs as is; --optuna adds a search block for ml-search.",
        epilog="Examples:\n  ml-init-config data/my_dataset --optuna --yes\n"
        "  ml-init-config data/train.csv --target label --optuna --yes\n"
        "  ml-init-config data/digits --architecture mlp --num-epochs 20 --output configs/digits_mlp.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "data_dir", metavar="DATA_DIR", help="dataset folder holding raw/<class>/<image> files, or a table"
    )
    p.add_argument("--target", metavar="COLUMN", help="tables: the column to predict")
    p.add_argument("--optuna", action="store_true", help="add a search: block for ml-search")
    p.add_argument("--yes", "-y", action="store_true", help="accept the detected defaults without prompting")
    p.add_argument("--output", "-o", type=Path, help="config path (default: configs/<dataset>_config.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing config file")
    p.add_argument(
        "--architecture",
        help="model.architecture (default simple_cnn; mlp, resnet18, timm/<name>; tables: xgboost (default), "
        "lightgbm, sklearn/<Estimator>, mlp)",
    )
    p.add_argument(
        "--num-epochs", "--num_epochs", dest="num_epochs", type=_positive_int, help="training.num_epochs"
    )
    p.add_argument(
        "--batch-size", "--batch_size", dest="batch_size", type=_positive_int, help="training.batch_size"
    )
    p.add_argument("--device", default="auto", help="training.device: auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument(
        "--image-size", "--image_size", dest="image_size", type=_positive_int, help="data.image_size"
    )
    p.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fine-tune a pretrained backbone (default: for photo-like images when a backbone's weights "
        "are in the local torch hub cache)",
    )
    p.add_argument(
        "--hflip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips (default: on, except for digits/letters)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _init_config(args))


def default_output(data_dir: str) -> Path:
    return Path("configs") / f"{Path(data_dir).resolve().name}_config.yaml"


def _check_output(path: Path, force: bool) -> None:
    from ml_framework.errors import ConfigError

    if path.exists() and not path.is_file():
        raise ConfigError(f"{path} exists and is not a file; choose another --output")
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it (or --output another path)")


def _init_config(args: argparse.Namespace) -> int:
    from ml_framework.config import from_container
    from ml_framework.data.inspect import inspect_dataset, render_report
    from ml_framework.errors import ConfigError
    from ml_framework.initconfig.generate import Choices, generate_config, resolve

    if not DEVICE_PATTERN.match(args.device):
        raise ConfigError(f"--device {args.device!r}: use auto, cpu, cuda, cuda:N or mps")
    if Path(args.data_dir).suffix.lower() in TABLE_SUFFIXES:
        return _init_table_config(args)
    output: Path = args.output or default_output(args.data_dir)
    _check_output(output, args.force)

    out = console()
    with out.status(f"inspecting {args.data_dir} ..."):
        report = inspect_dataset(args.data_dir)
    for renderable in render_report(report):
        out.print(renderable)

    choices = Choices(
        data_dir=Path(args.data_dir).as_posix(),
        architecture=args.architecture,
        image_size=args.image_size,
        num_epochs=args.num_epochs,
        batch_size=args.batch_size,
        device=args.device,
        horizontal_flip=args.hflip,
        optuna=args.optuna,
        pretrained=args.pretrained,
    )
    choices = machine_facts(report, choices)
    if not args.yes:
        choices = ask_choices(out, report, choices)
    check_architecture(resolve(report, choices))

    generated = generate_config(report, choices, output.as_posix())
    from_container(generated.mapping, where=str(output))  # the file must load: fail before writing
    _write_config(output, generated.text)

    _print_summary(out, generated.mapping, generated.notes)
    final = resolve(report, choices)
    out.print(f"\n[bold green]wrote[/] {output}\nNext:")
    out.print(f"  ml-train --config {output}", markup=False, soft_wrap=True)
    if final.optuna:
        study = generated.mapping["search"]["study_name"]
        out.print(f"  ml-search --config {output} --n-trials {final.n_trials}", markup=False, soft_wrap=True)
        out.print(f"  ml-visualise --mode search --study-name {study}", markup=False, soft_wrap=True)
    return EXIT_OK


def _write_config(output: Path, text: str) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(output)


def _init_table_config(args: argparse.Namespace) -> int:
    """ml-init-config on a table: inspect it, pick the model family, write the config."""
    from ml_framework.config import from_container
    from ml_framework.config.schema import takes_estimator_params
    from ml_framework.data.inspect_tabular import inspect_table, render_table_report
    from ml_framework.initconfig.tabular import DEFAULT_TABLE_ARCHITECTURE, generate_tabular_config

    out = console()
    with out.status(f"inspecting {args.data_dir} ..."):
        report = inspect_table(args.data_dir, args.target)
    output: Path = args.output or Path("configs") / f"{report.name}_config.yaml"
    _check_output(output, args.force)
    for renderable in render_table_report(report):
        out.print(renderable)
    architecture, optuna = args.architecture or DEFAULT_TABLE_ARCHITECTURE, args.optuna
    if not args.yes:
        from rich.prompt import Confirm, Prompt

        question = "Model (xgboost, lightgbm, sklearn/<Estimator>, mlp)"
        architecture = _ask(out, lambda: Prompt.ask(question, default=architecture, console=out)).strip()
        optuna = _ask(out, lambda: Confirm.ask("Add an Optuna search block", default=optuna, console=out))
    generated = generate_tabular_config(
        report, Path(args.data_dir).as_posix(), architecture, optuna, output.as_posix()
    )
    cfg = from_container(generated.mapping, where=str(output))  # the file must load: fail before writing
    if takes_estimator_params(architecture):  # a typo or a regressor for classes fails now
        from ml_framework.models.tabular import create_estimator

        create_estimator(cfg.model, report.task, seed=0)
    elif architecture != "mlp":
        from ml_framework.errors import ConfigError

        raise ConfigError(
            f"--architecture {architecture!r}: tables take xgboost, lightgbm, sklearn/<Estimator> or mlp"
        )
    _write_config(output, generated.text)
    out.print(f"\n[bold green]wrote[/] {output}\nNext:")
    out.print(f"  ml-train --config {output}", markup=False, soft_wrap=True)
    if optuna:
        out.print(f"  ml-search --config {output}", markup=False, soft_wrap=True)
    return EXIT_OK


def machine_facts(report: DatasetReport, choices: Choices) -> Choices:
    """What the config rules need to know about this machine: cached backbone weights, CUDA, free RAM."""
    import os

    from ml_framework.data.pipeline import default_budget_mb
    from ml_framework.initconfig.generate import TRANSFER_BACKBONES, is_photo_like

    facts: dict[str, Any] = {"memory_budget_mb": default_budget_mb(), "cpus": os.cpu_count() or 1}
    if choices.pretrained is not False and (choices.pretrained or is_photo_like(report)):
        from ml_framework.models.pretrained import cached_backbones

        facts["cached_backbones"] = cached_backbones(TRANSFER_BACKBONES)
        if choices.device == "auto":
            import torch

            facts["cuda"] = torch.cuda.is_available()
        else:
            facts["cuda"] = choices.device.startswith("cuda")
    return replace(choices, **facts)


def check_architecture(choices: Choices) -> None:
    """A typo must not produce a config that ml-train rejects; only non-built-ins need torch here."""
    from ml_framework.errors import ConfigError
    from ml_framework.initconfig.generate import BUILTIN_MODELS

    name = str(choices.architecture)
    if choices.pretrained and name in BUILTIN_MODELS:
        raise ConfigError(
            f"--pretrained: the built-in {name} has no pretrained weights; pick --architecture "
            "resnet18, mobilenet_v3_large or timm/<name>"
        )
    if name not in BUILTIN_MODELS:
        from ml_framework.models.factory import resolve_architecture

        resolve_architecture(name)


def _ask(out: Console, prompt: Callable[[], Any]) -> Any:
    """Run one prompt; piped answers are echoed so the transcript reads like a terminal session."""
    from ml_framework.errors import UserError

    try:
        answer = prompt()
    except EOFError:
        raise UserError("no answer on standard input; pass --yes to accept the detected defaults") from None
    if not sys.stdin.isatty():
        shown = ("y" if answer else "n") if isinstance(answer, bool) else answer
        out.print(str(shown), markup=False, highlight=False)
    return answer


def _ask_positive(out: Console, question: str, default: int) -> int:
    from rich.prompt import IntPrompt

    while True:
        value = _ask(out, lambda: IntPrompt.ask(question, default=default, console=out))
        if value >= 1:
            return int(value)
        out.print("[red]Please enter a number of at least 1[/]")


def ask_choices(out: Console, report: DatasetReport, choices: Choices) -> Choices:
    """Prompt for the main choices; each prompt shows the value detected for this dataset."""
    from rich.prompt import Confirm, Prompt

    from ml_framework.initconfig.generate import resolve

    suggested = str(resolve(report, choices).architecture)
    architecture = _ask(out, lambda: Prompt.ask("Model architecture", default=suggested, console=out))
    choices = replace(choices, architecture=architecture.strip() or suggested)
    # Suggestions depend on earlier answers (image size -> batch size -> epochs): resolve step by step.
    image_size = _ask_positive(out, "Image size (pixels)", resolve(report, choices).image_size or 0)
    choices = replace(choices, image_size=image_size)
    batch_size = _ask_positive(out, "Batch size", resolve(report, choices).batch_size or 0)
    choices = replace(choices, batch_size=batch_size)
    num_epochs = _ask_positive(out, "Number of epochs", resolve(report, choices).num_epochs or 0)
    choices = replace(choices, num_epochs=num_epochs)
    flip = _ask(
        out,
        lambda: Confirm.ask(
            "Random horizontal flips", default=bool(resolve(report, choices).horizontal_flip), console=out
        ),
    )
    optuna = _ask(out, lambda: Confirm.ask("Add an Optuna search block", default=choices.optuna, console=out))
    return replace(choices, horizontal_flip=flip, optuna=optuna)


def _print_summary(out: Console, mapping: dict[str, Any], notes: dict[str, str]) -> None:
    from rich.table import Table

    table = Table(title="Chosen settings", title_justify="left")
    table.add_column("key", no_wrap=True)
    table.add_column("value")
    table.add_column("why")
    rows = {
        "model.architecture": mapping["model"]["architecture"],
        "data.image_size": mapping["data"]["image_size"],
        "data.channels": mapping["data"]["channels"],
        "data.augmentation.horizontal_flip": mapping["data"]["augmentation"]["horizontal_flip"],
        "training.batch_size": mapping["training"]["batch_size"],
        "training.num_epochs": mapping["training"]["num_epochs"],
    }
    if "search" in mapping:
        rows["search.n_trials"] = mapping["search"]["n_trials"]
        rows["search.pruner.n_warmup_steps"] = mapping["search"]["pruner"]["n_warmup_steps"]
    for key, value in rows.items():
        table.add_row(key, str(value), notes.get(key, ""))
    out.print(table)


if __name__ == "__main__":
    raise SystemExit(main())
