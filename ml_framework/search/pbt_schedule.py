"""The schedule of a Population Based Training trial (search.engine ray, scheduler pbt).

A PBT trial's `pbt_history` user attr lists its initial values (`epoch` 0) and every exploit: after
epoch k it continued from trial m's checkpoint with new values. The values its final weights were
trained with follow that lineage back through the donors: `lineage` gives them as segments of epochs,
and `schedule_note` writes them to pbt_schedule.json and to best_config.yaml's header, with the
ml-train commands that replay them (`--resume` may change optimizer/scheduler keys).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna

from ml_framework.fileio import atomic_write_text

ATTR = "pbt_history"


def lineage(histories: dict[int, list[dict[str, Any]]], number: int, upto: int) -> list[dict[str, Any]]:
    """Segments `{"from_epoch", "to_epoch", "trial", "params"}` of the values that trained trial
    `number`'s weights up to epoch `upto`, oldest first."""
    history = histories.get(number) or []
    exploits = [e for e in history[1:] if int(e["epoch"]) < upto]
    if not exploits:
        params = history[0]["params"] if history else {}
        return [{"from_epoch": 1, "to_epoch": upto, "trial": number, "params": params}]
    last = exploits[-1]
    k = int(last["epoch"])
    before = lineage(histories, int(last["from_trial"]), k)
    return [*before, {"from_epoch": k + 1, "to_epoch": upto, "trial": number, "params": last["params"]}]


def _args(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in params.items())


def schedule_note(
    trials: list[optuna.trial.FrozenTrial], best: optuna.trial.FrozenTrial, out_dir: Path, num_epochs: int
) -> str:
    """For a PBT study: write pbt_schedule.json and return best_config.yaml's header lines about it
    ("" for any other study)."""
    if ATTR not in best.user_attrs:
        return ""
    histories = {t.number: t.user_attrs[ATTR] for t in trials if ATTR in t.user_attrs}
    last = int(best.user_attrs.get("last_epoch") or num_epochs)
    segments = lineage(histories, best.number, last)
    schedule = {
        "trial": best.number,
        "final_params": best.params,
        "lineage": segments,
        "histories": histories,
    }
    atomic_write_text(out_dir / "pbt_schedule.json", json.dumps(schedule, indent=1, default=str))
    config = out_dir / "best_config.yaml"
    lines = [
        f"Population Based Training: trial {best.number}'s weights were trained with a schedule of values "
        "(pbt_schedule.json):",
        *(
            f"  epochs {s['from_epoch']}-{s['to_epoch']} (trial {s['trial']}): {_args(s['params'])}"
            for s in segments
        ),
        "This config holds the final values; `ml-train --config` trains with them from epoch 1. To replay",
        "the schedule, train the first segment, then resume the run once per later segment:",
        f"  ml-train --config {config} {_args(segments[0]['params'])} "
        f"training.num_epochs={segments[0]['to_epoch']}",
        *(
            f"  ml-train --resume <run dir> {_args(s['params'])} training.num_epochs={s['to_epoch']}"
            for s in segments[1:]
        ),
    ]
    return "\n".join(lines) + "\n"
