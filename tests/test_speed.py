"""Speed settings (training/autotune.py): every precision and memory format trains on CPU, `auto`
measures once per key and caches, runs are reproducible, and studies record the concrete choice."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import tiny_config

from ml_framework.config import from_container, load_config, save_config
from ml_framework.errors import ConfigError
from ml_framework.training.autotune import CACHE_NAME, Candidate, _fastest, cpu_bf16_supported
from ml_framework.training.run import TrainResult, run_training

# 2 epochs of batch 16 on digits (~156 steps): longer than measuring, so `auto` measures.
LONG_ENOUGH = {"batch_size": 16, "num_epochs": 2}


def train(data: Path, runs: Path, **training: Any) -> TrainResult:
    return run_training(tiny_config(data, runs, training=training), progress=False)


def saved_training(result: TrainResult) -> dict[str, Any]:
    return yaml.safe_load((result.run_dir / "config.yaml").read_text())["training"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_each_precision_and_memory_format_trains_on_cpu(
    digits_dir: Path, tmp_path: Path, precision: str, channels_last: bool
) -> None:
    result = train(
        digits_dir,
        tmp_path / "runs",
        precision=precision,
        channels_last=channels_last,
        compile=False,
    )
    assert all(math.isfinite(v) for v in result.final.values())
    assert all(math.isfinite(v) for v in result.test.values())
    assert result.final["val_acc"] > 0.3
    assert (result.speed["precision"], result.speed["channels_last"]) == (precision, channels_last)
    assert result.speed["decided_by"]["precision"] == "config"
    assert not (tmp_path / "runs" / CACHE_NAME).exists()  # nothing to measure
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["speed"]["precision"] == precision


def test_fp16_on_cpu_falls_back_to_fp32_with_a_warning(digits_dir: Path, tmp_path: Path) -> None:
    fp16 = train(
        digits_dir, tmp_path / "a", num_epochs=1, precision="fp16", channels_last=False, compile=False
    )
    fp32 = train(
        digits_dir, tmp_path / "b", num_epochs=1, precision="fp32", channels_last=False, compile=False
    )
    assert fp16.speed["precision"] == "fp32" and fp16.speed["decided_by"]["precision"] == "fallback"
    log = (fp16.run_dir / "train.log").read_text()
    assert "WARNING" in log and "fp16 needs CUDA" in log and "training in fp32" in log
    assert saved_training(fp16)["precision"] == "fp32"  # config.yaml holds what was used
    assert fp16.final == {**fp32.final, "epoch_time": fp16.final["epoch_time"]}


# The keys `auto` measures on this CPU: the memory format always (the model has convolutions), the
# precision only where the CPU has native bf16 (elsewhere fp32 is its only choice).
MEASURED_KEYS = "precision, channels_last" if cpu_bf16_supported() else "channels_last"


def test_auto_measures_once_caches_and_reproduces(digits_dir: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = train(digits_dir, runs, **LONG_ENOUGH)
    assert first.speed["decided_by"]["channels_last"] == "measured"
    assert first.speed["decided_by"]["precision"] == ("measured" if cpu_bf16_supported() else "only choice")
    expected = {"fp32", "fp32+channels_last"} | (
        {"bf16", "bf16+channels_last"} if cpu_bf16_supported() else set()
    )
    assert set(first.speed["step_ms"]) == expected
    assert set(first.speed["eval_ms"]) == expected  # evaluation timed too, weighed by the val share
    assert first.speed["eval_share"] == pytest.approx(0.15 / 0.70, rel=0.05)
    assert first.speed["decided_by"]["compile"].startswith("off for a short run")
    cache = (runs / CACHE_NAME).read_text()
    assert len(json.loads(cache)) == 1
    assert "precision" in (first.run_dir / "train.log").read_text()

    second = train(digits_dir, runs, **LONG_ENOUGH)  # same key: read from the cache, same choice
    assert second.speed["decided_by"]["channels_last"] == "cached"
    assert f"{MEASURED_KEYS}: cached" in (second.run_dir / "train.log").read_text()
    assert (runs / CACHE_NAME).read_text() == cache  # nothing measured again
    assert [{**r, "epoch_time": 0} for r in second.history] == [{**r, "epoch_time": 0} for r in first.history]

    # config.yaml records the concrete choice: a reproduction elsewhere (no cache) measures nothing and
    # gives the same metrics, so measuring consumed none of training's random numbers.
    recorded = saved_training(first)
    assert recorded["precision"] in ("fp32", "bf16") and isinstance(recorded["channels_last"], bool)
    assert recorded["compile"] is False and recorded["amp"] is None
    repro_cfg = load_config(first.run_dir / "config.yaml", [f"output.runs_dir={tmp_path / 'elsewhere'}"])
    repro = run_training(repro_cfg, progress=False)
    assert set(repro.speed["decided_by"].values()) == {"config"}
    assert not (tmp_path / "elsewhere" / CACHE_NAME).exists()
    assert [{**r, "epoch_time": 0} for r in repro.history] == [{**r, "epoch_time": 0} for r in first.history]


def test_a_short_run_keeps_the_plain_settings_without_measuring_the_others(
    digits_dir: Path, tmp_path: Path
) -> None:
    result = train(digits_dir, tmp_path / "runs", num_epochs=1)  # 20 steps of batch 64
    assert (result.speed["precision"], result.speed["channels_last"], result.speed["compile"]) == (
        "fp32",
        False,
        False,
    )
    assert set(result.speed["step_ms"]) == {"fp32"}
    assert "kept plain" in result.speed["decided_by"]["channels_last"]


def test_the_choice_weighs_evaluation_by_its_share_of_the_epoch() -> None:
    plain, cl = Candidate("fp32", False), Candidate("fp32", True)
    timings = {plain.name: {"step_ms": 100.0, "eval_ms": 60.0}, cl.name: {"step_ms": 98.0, "eval_ms": 40.0}}
    assert _fastest([plain, cl], timings, eval_share=0.0) == plain  # 2% faster steps: within the margin
    assert _fastest([plain, cl], timings, eval_share=1.0) == cl  # 138 ms vs 160 ms per step with its eval
    assert _fastest([plain, cl], {**timings, cl.name: {"error": "no kernel"}}, eval_share=1.0) == plain


@pytest.mark.parametrize(
    ("training", "fragment"),
    [
        ({"precision": "fp8"}, "training.precision: 'fp8' is not one of auto, fp32, bf16, fp16"),
        ({"channels_last": "yes"}, "training.channels_last: 'yes' is not one of auto, true, false"),
        ({"compile": 1}, "training.compile: 1 is not one of auto, true, false"),
        ({"amp": False, "precision": "bf16"}, "training.amp: False contradicts training.precision: bf16"),
    ],
)
def test_speed_keys_are_checked(training: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        from_container({"training": training})


def test_amp_is_an_alias_of_precision(digits_dir: Path, tmp_path: Path) -> None:
    result = train(digits_dir, tmp_path / "runs", num_epochs=1, amp=False, channels_last=False, compile=False)
    assert result.speed["precision"] == "fp32" and result.speed["decided_by"]["precision"] == "config"
    assert saved_training(result)["amp"] is None  # the alias is replaced by the concrete key


@pytest.mark.slow
def test_search_workers_measure_once_and_best_config_records_the_choice(
    digits_dir: Path, tmp_path: Path
) -> None:
    from ml_framework.cli.search import main as search_main

    runs = tmp_path / "runs"
    cfg = {
        "data": {"dataset_name": "digits", "data_dir": str(digits_dir), "image_size": 8, "channels": 1},
        "model": {"architecture": "simple_cnn", "width": 8, "depth": 1},
        "training": {"num_epochs": 2, "batch_size": 16, "device": "cpu", "seed": 0},
        "output": {"runs_dir": str(runs)},
        "search": {
            "n_trials": 2,
            "sampler": {"type": "RandomSampler", "seed": 0},
            "pruner": {"type": "NopPruner"},
            "search_space": {"optimizer.lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2}},
        },
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(cfg))
    # two worker processes start their trials together: the cache's file lock lets one measure
    assert search_main(["--config", str(path), "--study-name", "speed", "--n-workers", "2"]) == 0
    study_dir = runs / "optuna_studies" / "speed"
    logs = [(study_dir / f"trial_{n}" / "train.log").read_text() for n in (0, 1)]
    assert sum(f"{MEASURED_KEYS}: measured" in log for log in logs) == 1
    assert sum(f"{MEASURED_KEYS}: cached" in log for log in logs) == 1
    assert all("compile: off in search trials" in log for log in logs)
    assert len(json.loads((runs / CACHE_NAME).read_text())) == 1
    best = yaml.safe_load((study_dir / "best_config.yaml").read_text())["training"]
    trial_cfg = yaml.safe_load((study_dir / "trial_0" / "config.yaml").read_text())["training"]
    assert best["precision"] in ("fp32", "bf16") and isinstance(best["channels_last"], bool)
    assert best["compile"] is False
    assert (best["precision"], best["channels_last"]) == (trial_cfg["precision"], trial_cfg["channels_last"])


@pytest.mark.slow
def test_compile_failure_falls_back_with_a_message(digits_dir: Path, tmp_path: Path) -> None:
    """A C++ compiler that does not exist makes torch.compile (inductor, CPU) fail: the run trains
    uncompiled and says why."""
    cfg_path = tmp_path / "c.yaml"
    cfg = tiny_config(digits_dir, tmp_path / "runs", training={"num_epochs": 1, "compile": True})
    save_config(cfg, cfg_path)
    code = (
        "import sys; from ml_framework.config import load_config; from ml_framework.training.run import "
        "run_training; r = run_training(load_config(sys.argv[1]), progress=False); print(r.speed)"
    )
    env = {"CXX": str(tmp_path / "no-such-compiler"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(cfg_path)], capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'compile': False" in proc.stdout
    assert "training.compile: torch.compile failed" in proc.stderr
