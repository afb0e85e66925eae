#!/usr/bin/env python
"""Does the pruner `ml-init-config --optuna` writes save epochs without costing accuracy, on data its
defaults were not chosen on?

The data is generated: procedurally drawn 16 px shapes (scripts/make_shapes.py, 6 classes, noise and
distractor lines), a different problem from the bundled digits the pruner defaults were picked on. For
every sampler seed, `ml-search` runs the generated config's search twice, once with its pruner and once
with `--pruner none` (the order alternates between seeds), then `ml-train` retrains each study's
`best_config.yaml` and the TEST accuracy of that run (held-out split, never seen by the search) is
compared. Reports the epochs trained (pruned / unpruned), the mean test accuracies and the search times.

    python benchmarks/pruning_savings.py [--trials 20] [--epochs 8] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import yaml
from _common import BIN, ensure_shapes, generated_config, record_result, run_command


def search(root: Path, config: Path, study: str, seed: int, pruned: bool, threads: int) -> dict[str, Any]:
    """One ml-search, then ml-train of its best_config.yaml; epochs, pruned trials, values and times."""
    import optuna

    cmd = [BIN / "ml-search", "--config", config, "--study-name", study, "--seed", str(seed),
           f"training.num_threads={threads}"]  # fmt: skip
    search_s = run_command(cmd + ([] if pruned else ["--pruner", "none"]), cwd=root)
    storage = f"sqlite:///{root / 'runs' / 'optuna_studies' / 'optuna.db'}"
    trials = optuna.load_study(study_name=study, storage=storage).trials
    best_config = root / "runs" / "optuna_studies" / study / "best_config.yaml"
    train = [BIN / "ml-train", "--config", best_config, "--name", study,
             f"output.runs_dir={root / 'retrained'}", f"training.num_threads={threads}"]  # fmt: skip
    run_command(train, cwd=root)
    metrics = json.loads((root / "retrained" / study / "metrics.json").read_text())
    finished = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {
        "epochs": sum(int(t.user_attrs.get("last_epoch", t.last_step or 0)) for t in trials),
        "trials_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "best_val_acc": max(t.value for t in finished),
        "test_acc": metrics["test"]["test_acc"],
        "search_s": round(search_s, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=20, help="trials per search (ml-init-config's default)")
    p.add_argument("--epochs", type=int, default=8, help="training.num_epochs (make demo uses 8)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds (one pair each)")
    p.add_argument("--per-class", type=int, default=100, help="generated images per class (6 classes)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of every trial and retraining")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = ensure_shapes(root / "shapes", per_class=args.per_class)
        config = root / "shapes.yaml"
        cfg = generated_config(data, config, epochs=args.epochs)
        cfg["search"]["n_trials"] = args.trials
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        pruner = cfg["search"]["pruner"]
        rows = []
        for i, seed in enumerate(args.seeds):
            order = [True, False] if i % 2 == 0 else [False, True]
            runs = {}
            for pruned in order:
                label = "pruned" if pruned else "nop"
                runs[label] = search(root, config, f"shapes_{label}_seed{seed}", seed, pruned, args.threads)
                print(f"seed {seed} {label}: {runs[label]}", flush=True)
            rows.append({"seed": seed, **runs})

    def total(label: str, key: str) -> float:
        return sum(r[label][key] for r in rows)

    def mean(label: str, key: str) -> float:
        return statistics.mean(r[label][key] for r in rows)

    epoch_ratio = total("pruned", "epochs") / total("nop", "epochs")
    acc_pruned, acc_nop = mean("pruned", "test_acc"), mean("nop", "test_acc")
    time_ratio = total("pruned", "search_s") / total("nop", "search_s")
    seeds = ",".join(map(str, args.seeds))
    measures = (
        f"epochs trained and test accuracy of the retrained best config, generated config's {pruner['type']} "
        f"vs NopPruner ({args.trials} trials x {args.epochs} epochs on generated 16 px shapes, seeds {seeds})"
    )
    result = (
        f"epochs x{epoch_ratio:.2f}, search time x{time_ratio:.2f}; test acc {acc_pruned:.3f} vs "
        f"{acc_nop:.3f} (mean of {len(rows)} seeds)"
    )
    print(measures)
    print(f"pruner: {pruner}")
    for r in rows:
        a, b = r["pruned"], r["nop"]
        print(
            f"seed {r['seed']}: epochs {a['epochs']} vs {b['epochs']} ({a['trials_pruned']} pruned), "
            f"test acc {a['test_acc']:.3f} vs {b['test_acc']:.3f}, "
            f"search {a['search_s']:.0f}s vs {b['search_s']:.0f}s"
        )
    print(result)
    record_result(
        "pruning_savings",
        {
            "measures": measures,
            "result": result,
            "epoch_ratio": round(epoch_ratio, 3),
            "search_time_ratio": round(time_ratio, 3),
            "test_acc_pruned_mean": round(acc_pruned, 4),
            "test_acc_nop_mean": round(acc_nop, 4),
            "pruner": pruner,
            "per_seed": rows,
            "settings": {**vars(args), "dataset": "scripts/make_shapes.py (6 classes, 16 px)"},
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
