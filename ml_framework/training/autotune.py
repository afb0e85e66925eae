"""Speed settings of a run: numeric precision, memory format and `torch.compile`, as the config sets
them or, for `auto`, chosen by measurement.

`auto` times a few real training steps (the trainer's own `train_step`: forward under autocast, fp32
loss, backward, optimizer step) and evaluation steps (the trainer's own `evaluate` on one batch) of
each candidate on copies of the run's model and a fresh optimizer of the run's config, with a
synthetic batch of the run's batch size and image shape, on the run's device. A candidate's cost is
its step time plus the evaluation that comes with each training step (validation images per training
image): a memory format can pay in evaluation and not in training. The measurement runs under a
forked RNG and touches neither the model nor the data, so training sees exactly the random streams it
sees without it. Timings are cached per (device, model config, input shape, batch size, optimizer,
torch version) in `<runs_dir>/.autotune.json`, under a file lock and written atomically, so the trials
of a search (local workers included) measure at most once and every run with the same key makes the
same choice. The run writes the concrete choice into its
config.yaml (and a study into best_config.yaml), so a reproduction never depends on a new measurement.

A candidate replaces a plainer one (fp32 before reduced precision, the default memory format before
channels-last, eager before compiled) only when its cost is at least `MARGIN` lower, so measurement
noise does not pick a setting for a gain it cannot resolve. The plain candidate is timed first: a run with
fewer steps than measuring the others would take keeps it. `compile: auto` is considered only outside
search trials and for runs whose estimated training time exceeds `COMPILE_MIN_RUN_S`; it is chosen
when the time it saves over the run pays for its compilation. `compile: true` first trains one step
on a copy, so a model or machine where compiling fails trains uncompiled, with a warning.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import logging
import math
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ml_framework.fileio import atomic_write_text

log = logging.getLogger("ml_framework.training")

CACHE_NAME = ".autotune.json"
MARGIN = 0.05  # a less plain candidate must cost at least 5% less per step (evaluation included)
COMPILE_MIN_RUN_S = 600.0  # compile: auto measures compilation only for runs estimated longer
WARMUP_STEPS = 2
ROUNDS = 3
MIN_TIMED_S = 0.05  # each timed segment runs enough steps to last about this long
MAX_STEPS_PER_ROUND = 10
# Model keys that do not change a step's cost (weights are loaded into the same architecture; dropout
# masks cost the same at any rate), so a search over them measures once.
_NOT_IN_KEY = ("pretrained", "weights", "weights_path", "dropout")


@dataclass(frozen=True)
class Candidate:
    precision: str  # fp32, bf16, fp16
    channels_last: bool
    compile: bool = False

    @property
    def name(self) -> str:
        parts = [self.precision] + ["channels_last"] * self.channels_last + ["compile"] * self.compile
        return "+".join(parts)

    @property
    def plainness(self) -> tuple[bool, bool, bool]:
        """Sort key: plainer settings first (they win ties)."""
        return (self.precision != "fp32", self.channels_last, self.compile)


@dataclass
class SpeedChoice:
    """The concrete speed settings of a run, and how they were decided (for train.log and metrics.json)."""

    precision: str
    channels_last: bool
    compile: bool
    decided_by: dict[str, str] = field(default_factory=dict)  # key -> config | measured | cached | fallback
    step_ms: dict[str, float] = field(default_factory=dict)  # candidate -> measured ms per training step
    eval_ms: dict[str, float] = field(default_factory=dict)  # candidate -> ms to evaluate one such batch
    eval_share: float = 0.0  # validation images per training image of an epoch
    notes: list[str] = field(default_factory=list)

    def config_values(self) -> dict[str, Any]:
        """The dotted config keys that reproduce this choice without measuring."""
        return {
            "training.precision": self.precision,
            "training.amp": None,
            "training.channels_last": self.channels_last,
            "training.compile": self.compile,
        }

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "config": self.config_values()}

    def describe(self) -> str:
        by_reason: dict[str, list[str]] = {}
        for key, reason in self.decided_by.items():
            by_reason.setdefault(reason, []).append(key)
        how = "; ".join(f"{', '.join(keys)}: {reason}" for reason, keys in by_reason.items())

        def timing(name: str, ms: float) -> str:
            evaluation = self.eval_ms.get(name)
            return f"{name} {ms:.1f} ms" + (
                "" if evaluation is None else f" + eval {evaluation:.1f} ms x {self.eval_share:.2f}"
            )

        timings = ", ".join(timing(k, v) for k, v in sorted(self.step_ms.items(), key=lambda kv: kv[1]))
        text = (
            f"speed settings: precision={self.precision} channels_last={str(self.channels_last).lower()} "
            f"compile={str(self.compile).lower()} ({how})"
        )
        return text + (f"; step times: {timings}" if timings else "")


def cpu_bf16_supported() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX-512 BF16 or AMX), where bf16 autocast can pay."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def device_name(device: torch.device) -> str:
    """What the timings depend on: the GPU model, or the CPU model and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def requested(t: DictConfig) -> tuple[str, bool | str, bool | str]:
    """(precision, channels_last, compile) as the config asks; `amp` is the old alias of precision."""
    precision = str(t.precision)
    if t.get("amp") is not None and precision == "auto":
        precision = "auto" if t.amp else "fp32"
    return precision, t.channels_last, t.compile


def adopt_recorded_speed(cfg: DictConfig, run_dir: Path) -> None:
    """On resume: the keys `cfg` leaves to `auto` take the concrete values the run recorded in its
    config.yaml, so the run continues as it started, without measuring again."""
    try:
        recorded = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("training") or {}
    except (OSError, yaml.YAMLError):
        return
    t = cfg.training
    precision, channels_last, compile_ = requested(t)
    if precision == "auto" and recorded.get("precision") in ("fp32", "bf16", "fp16"):
        t.precision, t.amp = recorded["precision"], None
    if channels_last == "auto" and isinstance(recorded.get("channels_last"), bool):
        t.channels_last = recorded["channels_last"]
    if compile_ == "auto" and isinstance(recorded.get("compile"), bool):
        t.compile = recorded["compile"]


def _precisions(precision: str, device: torch.device, notes: list[str]) -> list[str]:
    cuda = device.type == "cuda"
    reduced = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "bf16"
    if precision == "auto":
        return ["fp32", reduced] if cuda or cpu_bf16_supported() else ["fp32"]
    if precision == "fp16" and not cuda:
        notes.append(
            "training.precision: fp16 needs CUDA (CPUs have no fast fp16 training); training in fp32. "
            "Use bf16 or auto on CPU"
        )
        return ["fp32"]
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        notes.append("training.precision: this GPU has no bf16; training in fp16 with a GradScaler")
        return ["fp16"]
    if precision == "bf16" and not cuda and not cpu_bf16_supported():
        notes.append("training.precision: bf16 on a CPU without native bf16 is emulated and slow")
    return [precision]


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d | nn.Conv3d) for m in model.modules())


def choose_speed(
    cfg: DictConfig,
    model: nn.Module,
    *,
    device: torch.device,
    input_shape: tuple[int, int, int],
    num_classes: int,
    total_steps: int,
    eval_share: float = 0.0,
    trial: bool = False,
) -> SpeedChoice:
    """The concrete speed settings of `cfg.training` for `model` (not modified), measuring `auto` keys.
    `eval_share`: validation images per training image of an epoch (the evaluation each step brings)."""
    precision, channels_last, compile_ = requested(cfg.training)
    notes: list[str] = []
    precisions = _precisions(precision, device, notes)
    layouts = [False, True] if channels_last == "auto" and _has_conv(model) else [channels_last is True]
    decided_by = {
        "precision": "config" if precision != "auto" else "measured",
        "channels_last": "config" if channels_last != "auto" else "measured",
        "compile": "config" if compile_ != "auto" else "measured",
    }
    if precision != "auto" and precisions != [precision]:  # not available here (a note says why)
        decided_by["precision"] = "fallback"
    if len(precisions) == 1 and precision == "auto":
        decided_by["precision"] = "only choice"
    if len(layouts) == 1 and channels_last == "auto":
        decided_by["channels_last"] = "only choice"
    eager = sorted((Candidate(p, cl) for p in precisions for cl in layouts), key=lambda c: c.plainness)
    plain = eager[0]
    bench = _Bench(cfg, model, device, input_shape, num_classes)
    steps: dict[str, dict[str, Any]] = {}
    if len(eager) > 1 or (compile_ == "auto" and not trial):
        steps = bench.timings([plain], section="plain")
    if len(eager) > 1 and "step_ms" in steps[plain.name]:
        cost = len(eager) * (WARMUP_STEPS + 1 + ROUNDS * _steps_per_round(steps[plain.name]["step_ms"]))
        if total_steps < cost:  # measuring would cost more steps than the whole run
            why = f"kept plain: a run of {total_steps} steps is shorter than measuring ({cost} steps)"
            decided_by.update({k: why for k in ("precision", "channels_last") if decided_by[k] == "measured"})
        else:
            steps = bench.timings(eager)
    best = _fastest(eager, steps, eval_share)
    use_compile = False
    if compile_ is True:
        error = bench.probe_compile(Candidate(best.precision, best.channels_last, True))
        use_compile = error is None
        if error is not None:
            decided_by["compile"] = "fallback"
            notes.append(f"training.compile: torch.compile failed ({error}); training without compiling")
    elif compile_ == "auto" and trial:
        decided_by["compile"] = "off in search trials (set training.compile: true to compile them)"
    elif compile_ == "auto":
        estimate_s = steps[best.name].get("step_ms", 0.0) / 1000 * total_steps
        if estimate_s < COMPILE_MIN_RUN_S:
            decided_by["compile"] = f"off for a short run (~{estimate_s:.0f} s of training steps)"
        else:
            compiled = Candidate(best.precision, best.channels_last, True)
            steps.update(bench.timings([compiled]))
            use_compile = _compile_pays(steps[best.name], steps[compiled.name], total_steps)
    measured = {k: float(v["step_ms"]) for k, v in steps.items() if "step_ms" in v}
    evaluated = {k: float(v["eval_ms"]) for k, v in steps.items() if "eval_ms" in v}
    source = "cached" if bench.cache_hit else "measured"
    decided_by = {k: source if v == "measured" else v for k, v in decided_by.items()}
    return SpeedChoice(
        best.precision, best.channels_last, use_compile, decided_by, measured, evaluated, eval_share, notes
    )


def _steps_per_round(step_ms: float) -> int:
    """Steps per timed segment: enough to last MIN_TIMED_S, at most MAX_STEPS_PER_ROUND."""
    return max(1, min(MAX_STEPS_PER_ROUND, math.ceil(MIN_TIMED_S * 1000 / max(step_ms, 1e-3))))


def _cost_ms(timing: dict[str, Any], eval_share: float) -> float | None:
    """ms per training step with the evaluation it brings, or None when the candidate failed."""
    if "step_ms" not in timing:
        return None
    return float(timing["step_ms"]) + eval_share * float(timing.get("eval_ms", 0.0))


def _fastest(candidates: list[Candidate], steps: dict[str, dict[str, Any]], eval_share: float) -> Candidate:
    """The cheapest candidate that beats every plainer one by MARGIN (candidates sorted plainest first)."""
    best = candidates[0]
    for c in candidates[1:]:
        ms, best_ms = (_cost_ms(steps.get(k.name, {}), eval_share) for k in (c, best))
        if ms is not None and best_ms is not None and ms < best_ms * (1 - MARGIN):
            best = c
    return best


def _compile_pays(eager: dict[str, Any], compiled: dict[str, Any], total_steps: int) -> bool:
    if "step_ms" not in compiled:
        return False
    saved_s = (eager["step_ms"] - compiled["step_ms"]) / 1000 * total_steps
    return compiled["step_ms"] < eager["step_ms"] * (1 - MARGIN) and saved_s > compiled.get("compile_s", 0.0)


class _Bench:
    """Times candidates on copies of the model, through the cache file."""

    def __init__(
        self,
        cfg: DictConfig,
        model: nn.Module,
        device: torch.device,
        input_shape: tuple[int, int, int],
        num_classes: int,
    ) -> None:
        self.cfg, self.model, self.device = cfg, model, device
        self.input_shape, self.num_classes = input_shape, num_classes
        self.batch_size = int(cfg.training.batch_size)
        self.cache_path = Path(cfg.output.runs_dir) / CACHE_NAME
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        assert isinstance(model_cfg, dict)
        self.key = {
            "device": device_name(device),
            "model": {k: v for k, v in model_cfg.items() if k not in _NOT_IN_KEY},
            "num_classes": num_classes,
            "input": [self.batch_size, *input_shape],
            "optimizer": str(cfg.optimizer.name),
            "torch": torch.__version__,
            "timed": "train_step, evaluate",
        }
        self.key_id = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]
        self.cache_hit = True

    def timings(self, candidates: list[Candidate], section: str = "steps") -> dict[str, dict[str, Any]]:
        """{candidate: {"step_ms": ..., "eval_ms": ...} | {"error": ...}} from the cache's `section`,
        measuring the missing ones together (alternating). Sections: "steps" (the compared candidates,
        measured side by side), "plain" (the plain candidate alone, for the short-run rule). Cached
        values never change."""
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.cache_path.with_name(CACHE_NAME + ".lock")):
            cache = _read_cache(self.cache_path)
            entry = cache.setdefault(self.key_id, {"key": self.key})
            timed = entry.setdefault(section, {})
            missing = [c for c in candidates if c.name not in timed]
            if missing:
                self.cache_hit = False
                log.info("measuring %s (once per device/model/shape)", ", ".join(c.name for c in missing))
                timed.update(self._measure(missing, evaluate=section != "plain"))
                entry["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                atomic_write_text(self.cache_path, json.dumps(cache, indent=1, sort_keys=True) + "\n")
        return {c.name: timed[c.name] for c in candidates}

    def probe_compile(self, candidate: Candidate) -> str | None:
        """None when the model compiles and trains a step under `candidate`; else the error, short."""
        result = self._measure([candidate], rounds=0)[candidate.name]
        return result.get("error")

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        x = torch.randn((self.batch_size, *self.input_shape), generator=g)
        y = torch.randint(0, self.num_classes, (self.batch_size,), generator=g)
        return x.to(self.device), y.to(self.device)

    def _measure(
        self, candidates: list[Candidate], rounds: int = ROUNDS, evaluate: bool = False
    ) -> dict[str, dict[str, Any]]:
        """Warm-up steps, then `rounds` rounds that alternate the candidates; the fastest round counts
        (the least disturbed by other processes). With `evaluate`, eager candidates also time evaluation
        steps (a compiled model would compile again for evaluation: its choice rests on training steps);
        the plain candidate timed alone (the short-run rule) needs only its step time."""
        out: dict[str, dict[str, Any]] = {}
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            x, y = self._batch()
            runners: dict[Candidate, tuple[Any, int]] = {}
            for c in candidates:
                try:
                    trainer = self._trainer(c)
                    start = _now(self.device)
                    trainer.train_step(x, y)  # includes compilation for compiled candidates
                    first_s = _now(self.device) - start
                    for _ in range(WARMUP_STEPS - 1):
                        trainer.train_step(x, y)
                    warm_s = _timed(trainer, x, y, 1, self.device)
                    if evaluate and not c.compile:
                        _timed(trainer, x, y, 1, self.device, evaluate=True)  # warm-up
                except Exception as e:  # a candidate that cannot train (compiler missing, no kernel)
                    out[c.name] = {"error": _short(e)}
                    continue
                out[c.name] = {"compile_s": round(first_s, 3)} if c.compile else {}
                runners[c] = (trainer, _steps_per_round(warm_s * 1000))
            best: dict[Candidate, list[float]] = {c: [math.inf, math.inf] for c in runners}
            for r in range(rounds):
                order = list(runners) if r % 2 == 0 else list(reversed(runners))
                for c in order:
                    trainer, n = runners[c]
                    try:
                        best[c][0] = min(best[c][0], _timed(trainer, x, y, n, self.device))
                        if evaluate and not c.compile:
                            best[c][1] = min(best[c][1], _timed(trainer, x, y, n, self.device, evaluate=True))
                    except Exception as e:  # e.g. out of memory with the copies side by side
                        out[c.name] = {"error": _short(e)}
                        del runners[c], best[c]
            for c, (step_s, eval_s) in best.items():
                if rounds:
                    out[c.name]["step_ms"] = round(step_s * 1000, 3)
                if rounds and math.isfinite(eval_s):
                    out[c.name]["eval_ms"] = round(eval_s * 1000, 3)
            runners.clear()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()  # the copies' memory goes back before training starts
        return out

    def _trainer(self, c: Candidate) -> Any:
        from ml_framework.training.optim import create_optimizer
        from ml_framework.training.trainer import Trainer

        model = copy.deepcopy(self.model).to(self.device)
        if c.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = create_optimizer(model.parameters(), self.cfg.optimizer)
        if c.compile:
            model.compile()
        model.train()
        t = self.cfg.training
        return Trainer(
            model, optimizer, None, None, None, num_classes=self.num_classes, num_epochs=1,
            device=self.device, precision=c.precision, channels_last=c.channels_last,
            grad_clip_norm=t.grad_clip_norm, label_smoothing=t.label_smoothing,
        )  # fmt: skip


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _timed(
    trainer: Any, x: torch.Tensor, y: torch.Tensor, n: int, device: torch.device, evaluate: bool = False
) -> float:
    """Seconds per training step (or, with `evaluate`, per evaluation of the batch) over `n` of them."""
    start = _now(device)
    if evaluate:
        trainer.evaluate([(x, y)] * n)
    else:
        trainer.model.train()
        for _ in range(n):
            trainer.train_step(x, y)
    return (_now(device) - start) / n


def _short(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first[:200]}".rstrip(": ")


def _read_cache(path: Path) -> dict[str, Any]:
    """The cache's entries; an unreadable file (hand-edited, another version's) is measured afresh."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock among the processes of this machine that use the same runs dir."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def apply_choice(model: nn.Module, choice: SpeedChoice) -> nn.Module:
    """The run's model in the chosen memory format, compiled in place when chosen (state_dict keys and
    parameters are unchanged, so checkpoints and the optimizer are unaffected)."""
    if choice.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if choice.compile:
        model.compile()
    return model
