#!/usr/bin/env python
"""What `ml-search` costs on top of a hand-written Optuna script doing the same trials.

Both are whole commands on the bundled digits (scripts/make_digits.py, resized to 16 px): `ml-search`
on a config, and benchmarks/handwritten_search.py, which shares no code with ml_framework (its own PIL
loading, split, CNN of the same size as simple_cnn, training loop and `study.optimize`). Same trials,
epochs, batch size, model size, search space (lr, dropout), TPE seed, SQLite storage and CPU threads;
each validates every epoch, reports to the trial and scores the test split with the best weights. What
ml-search adds: cached decoding, run dirs, checkpoints, TensorBoard, logs, progress and the study
outputs refreshed after every trial. ml-search runs twice: as users get it (`training.precision`,
`channels_last`, `compile`: auto, which may pick bf16 on a CPU that runs it faster) and with fp32, the
default memory format and no compile, i.e. the hand-written script's arithmetic, which isolates the
framework's overhead. The commands alternate over several rounds; reports the median wall times, their
ratios to the hand-written script, the time added per trial and the median trial duration of each.

    python benchmarks/search_overhead.py [--trials 10] [--epochs 3] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from _common import BIN, REPO, alternating_rounds, ensure_digits, median, record_result, run_command


def framework_config(data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The ml-search config matching handwritten_search.py's settings."""
    return {
        "data": {
            "dataset_name": "digits",
            "data_dir": str(data),
            "image_size": args.image_size,
            "channels": 1,
            "val_split": 0.15,
            "test_split": 0.15,
            "augmentation": {"random_crop": False, "normalize": True},
        },
        "model": {"architecture": "simple_cnn", "width": args.width, "depth": args.depth},
        "training": {
            "num_epochs": args.epochs,
            "batch_size": args.batch_size,
            "device": "cpu",
            "seed": 42,
            "num_threads": args.threads,
        },
        "optimizer": {"name": "adamw", "lr": 0.001, "weight_decay": 1e-4},
        "scheduler": {"name": "cosine", "min_lr": 0.0},
        "output": {"runs_dir": "runs"},
        "search": {
            "n_trials": args.trials,
            "metric": "val_acc",
            "direction": "maximize",
            "storage": "sqlite:///framework.db",
            "sampler": {"type": "TPESampler", "seed": 0, "n_startup_trials": 5},
            "pruner": {"type": "NopPruner"},
            "search_space": {
                "optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
                "model.dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
            },
        },
    }


def median_trial_s(storage: str, study: str) -> float:
    import optuna

    trials = optuna.load_study(study_name=study, storage=storage).trials
    return median([(t.datetime_complete - t.datetime_start).total_seconds() for t in trials])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds; the median is reported")
    p.add_argument("--batch-size", type=int, default=32, help="ml-init-config's choice for the digits")
    p.add_argument("--width", type=int, default=32, help="model.width (ml-init-config's default)")
    p.add_argument("--depth", type=int, default=2, help="model.depth (ml-init-config's default)")
    p.add_argument("--image-size", type=int, default=16, help="ml-init-config's choice for the digits")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of both")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = ensure_digits(root / "digits")
        config = root / "digits.yaml"
        config.write_text(yaml.safe_dump(framework_config(data, args), sort_keys=False))
        hand_storage = f"sqlite:///{root / 'handwritten.db'}"
        common = ["--trials", str(args.trials), "--epochs", str(args.epochs), "--batch-size",
                  str(args.batch_size), "--width", str(args.width), "--depth", str(args.depth),
                  "--image-size", str(args.image_size), "--threads", str(args.threads)]  # fmt: skip

        def handwritten(r: int) -> float:
            cmd = [sys.executable, REPO / "benchmarks" / "handwritten_search.py", "--data", data,
                   "--storage", hand_storage, "--study-name", f"hand_{r}", *common]  # fmt: skip
            return run_command(cmd, cwd=root)

        def framework(study: str, *overrides: str):
            def run(r: int) -> float:
                cmd = [BIN / "ml-search", "--config", config, "--study-name", f"{study}_{r}", *overrides]
                return run_command(cmd, cwd=root)

            return run

        print("warm-up (decode cache, first imports; not counted)", flush=True)
        run_command(
            [BIN / "ml-search", "--config", config, "--study-name", "warmup", "--n-trials", "1"], cwd=root
        )
        fp32 = ("training.precision=fp32", "training.channels_last=false", "training.compile=false")
        setups = {
            "handwritten": handwritten,
            "ml-search fp32": framework("fp32", *fp32),
            "ml-search": framework("auto"),
        }
        walls = alternating_rounds(setups, args.rounds)
        fw_storage = f"sqlite:///{root / 'framework.db'}"
        trial_s = {
            name: median([median_trial_s(storage, f"{study}_{r}") for r in range(args.rounds)])
            for name, storage, study in [
                ("handwritten", hand_storage, "hand"),
                ("ml-search fp32", fw_storage, "fp32"),
                ("ml-search", fw_storage, "auto"),
            ]
        }
    wall = {name: median(values) for name, values in walls.items()}
    hand, fp32_s, auto_s = wall["handwritten"], wall["ml-search fp32"], wall["ml-search"]
    added = (fp32_s - hand) / args.trials
    measures = (
        f"wall time of ml-search (fp32 = the same arithmetic; and as users get it, precision auto) vs a "
        f"hand-written Optuna script (own loading, model, loop; SQLite), {args.trials} trials x "
        f"{args.epochs} epochs on the digits, {args.threads} thread, "
        f"median of {args.rounds} alternating rounds"
    )
    result = (
        f"fp32 x{fp32_s / hand:.2f} ({fp32_s:.1f} s vs {hand:.1f} s, {added * 1000:+.0f} ms per trial); "
        f"auto x{auto_s / hand:.2f} ({auto_s:.1f} s); median trial {trial_s['ml-search fp32']:.2f} s (fp32), "
        f"{trial_s['ml-search']:.2f} s (auto) vs {trial_s['handwritten']:.2f} s"
    )
    print(measures)
    for name, values in walls.items():
        each = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name}: {wall[name]:.1f} s, median trial {trial_s[name]:.3f} s  (rounds: {each})")
    print(result)
    record_result(
        "search_overhead",
        {
            "measures": measures,
            "result": result,
            "wall_ratio_fp32": round(fp32_s / hand, 3),
            "wall_ratio_auto": round(auto_s / hand, 3),
            "added_per_trial_ms_fp32": round(added * 1000),
            "wall_s": {k: [round(v, 2) for v in vs] for k, vs in walls.items()},
            "median_trial_s": {k: round(v, 3) for k, v in trial_s.items()},
            "settings": vars(args),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
