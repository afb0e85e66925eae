#!/usr/bin/env python
"""Whole-run training speed of the framework against a hand-written PyTorch loop doing the same work.

Per case, in one process and in rotating order, `--rounds` rounds (medians reported) of three runs on
the same data, split, model, initial weights, batch size, optimizer and number of epochs:

- hand-written: fp32, default memory format, eager PyTorch; every epoch trains, evaluates the
  validation split and saves last.pt (model + optimizer) and best.pt; at the end the best weights are
  evaluated on the test split;
- framework, auto: the whole `run_training` (ml-train's function) with the default speed settings
  (`precision`, `channels_last`, `compile`: auto);
- framework, fp32: the same with fp32, default memory format, no compile: the framework's overhead.

images/s = training images x epochs / wall time of the whole run (data, model, training, evaluation,
checkpoints, logs). A warm-up run (not counted) fills the framework's decode cache and its autotune
cache: the one-time measurement is reported separately (every later run, and every trial of a
search, with the same device/model/shape/batch reads the cache). val_acc is the last epoch's.

    python benchmarks/trainer_speed.py [--rounds 5] [--cases resnet18_64,resnet18_32,simple_cnn_digits]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import REPO, RESULTS, ensure_digits, record_result


@dataclass(frozen=True)
class Case:
    name: str
    architecture: str
    image_size: int
    channels: int
    epochs: int
    per_class: int | None  # images per class taken from digits (None: all 1797)
    model: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    val_split: float = 0.15
    test_split: float = 0.15


CASES = {
    c.name: c
    for c in (
        # 600 images, half of them for validation (so val_acc resolves 0.01), 240 to train on
        Case("resnet18_64", "resnet18", 64, 3, 4, 60, {"dropout": 0.0}, 32, val_split=0.5, test_split=0.1),
        Case("resnet18_32", "resnet18", 32, 3, 4, 60, {"dropout": 0.0}, 32, val_split=0.5, test_split=0.1),
        Case("simple_cnn_digits", "simple_cnn", 8, 1, epochs=5, per_class=None),
    )
}


def subset(digits: Path, out: Path, per_class: int | None) -> Path:
    """The first `per_class` images of each digit as an image folder (all of them for None)."""
    if per_class is None:
        return digits
    for class_dir in sorted((digits / "raw").iterdir()):
        files = sorted(class_dir.glob("*.png"), key=lambda p: int(p.stem))[:per_class]
        (out / "raw" / class_dir.name).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(f, out / "raw" / class_dir.name / f.name)
    return out


def framework_config(case: Case, data: Path, runs: Path, **training: Any) -> Any:
    from ml_framework.config import from_container

    return from_container(
        {
            "data": {"dataset_name": case.name, "data_dir": str(data), "image_size": case.image_size,
                     "channels": case.channels, "val_split": case.val_split, "test_split": case.test_split},
            "model": {"architecture": case.architecture, **case.model},
            "training": {"num_epochs": case.epochs, "batch_size": case.batch_size, "device": "cpu", "seed": 0,
                         **training},
            "optimizer": {"name": "adamw", "lr": 1e-3},
            "scheduler": {"name": "none"},
            "output": {"runs_dir": str(runs)},
        }
    )  # fmt: skip


def framework(cfg: Any) -> tuple[float, float, dict[str, Any]]:
    """(seconds, last val_acc, speed settings) of one whole run."""
    from ml_framework.training.run import run_training

    start = time.perf_counter()
    result = run_training(cfg, progress=False)
    return time.perf_counter() - start, result.final["val_acc"], result.speed


class HandWritten:
    """The plain PyTorch loop. Images are decoded with PIL once (as the framework's decode cache is
    warm); normalisation, batching, training, evaluation and checkpoints are inside the timed run."""

    def __init__(self, case: Case, data: Path, splits: dict[str, Any], workdir: Path) -> None:
        from PIL import Image

        mode = "L" if case.channels == 1 else "RGB"

        def load(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            arrays, labels = [], []
            for rel in files:
                with Image.open(data / "raw" / rel) as im:
                    im = im.convert(mode).resize(
                        (case.image_size, case.image_size), Image.Resampling.BILINEAR
                    )
                    a = np.asarray(im, dtype=np.uint8)
                arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
                labels.append(int(rel.split("/")[0]))
            # .contiguous(): NCHW in the default memory format, as this loop claims. np.stack of
            # transposed HWC arrays keeps their layout, so without it the RGB cases trained and
            # evaluated channels-last (evaluation of ResNet-18 at 64 px: ~25% faster here).
            return torch.from_numpy(np.stack(arrays)).contiguous(), torch.tensor(labels)

        self.case, self.workdir = case, workdir
        self.train, self.val, self.test = (load(splits[k]) for k in ("train", "val", "test"))

    def model(self) -> torch.nn.Module:
        if self.case.architecture == "resnet18":
            import torchvision

            return torchvision.models.resnet18(num_classes=10)
        from ml_framework.config import from_container
        from ml_framework.models import create_model

        cfg = from_container({"model": {"architecture": self.case.architecture, **self.case.model}})
        return create_model(
            cfg.model, channels=self.case.channels, image_size=self.case.image_size, num_classes=10
        )

    def run(self) -> tuple[float, float]:
        """(seconds, last val_acc)."""
        start = time.perf_counter()
        x8, y = self.train
        mean = x8.float().div(255).mean(dim=(0, 2, 3), keepdim=True)
        std = x8.float().div(255).std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)

        def norm(x: torch.Tensor) -> torch.Tensor:
            return (x.float() / 255 - mean) / std

        xtr, xva, xte = norm(x8), norm(self.val[0]), norm(self.test[0])
        torch.manual_seed(0)
        model = self.model()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(0)
        n, bs, best, val_acc = len(y), self.case.batch_size, -1.0, 0.0
        for epoch in range(self.case.epochs):
            model.train()
            perm = torch.randperm(n, generator=g)
            for i in range(0, n, bs):
                idx = perm[i : i + bs]
                loss = torch.nn.functional.cross_entropy(
                    model(xtr.index_select(0, idx)), y.index_select(0, idx)
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            val_acc = accuracy(model, xva, self.val[1])
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1},
                       self.workdir / "last.pt")  # fmt: skip
            if val_acc > best:
                best = val_acc
                torch.save(model.state_dict(), self.workdir / "best.pt")
        model.load_state_dict(torch.load(self.workdir / "best.pt", weights_only=True))
        accuracy(model, xte, self.test[1])
        return time.perf_counter() - start, val_acc


@torch.inference_mode()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(
        int((model(x[i : i + 256]).argmax(1) == y[i : i + 256]).sum()) for i in range(0, len(y), 256)
    )
    return correct / max(len(y), 1)


def bench_case(case: Case, digits: Path, tmp: Path, rounds: int) -> dict[str, Any]:
    data = subset(digits, tmp / f"{case.name}_data", case.per_class)
    runs = tmp / f"{case.name}_runs"
    auto_cfg = framework_config(case, data, runs)
    fp32_cfg = framework_config(case, data, runs, precision="fp32", channels_last=False, compile=False)

    load = os.getloadavg()[0]
    # warm-up: decode cache, the one-time measurement (which also warms fp32's kernels), not counted
    first_s, _, speed = framework(auto_cfg)
    run_dir = max(runs.glob(f"{case.name}_*"), key=lambda p: p.stat().st_mtime)
    splits = json.loads((run_dir / "splits.json").read_text())
    hand = HandWritten(case, data, splits, tmp)
    n_train = len(hand.train[1])

    contenders = {
        "hand": hand.run,
        "auto": lambda: framework(auto_cfg)[:2],
        "fp32": lambda: framework(fp32_cfg)[:2],
    }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    accs: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in names[r % 3 :] + names[: r % 3]:  # rotate the order every round
            seconds, acc = contenders[name]()
            times[name].append(seconds)
            accs[name].append(acc)
    med = {k: statistics.median(v) for k, v in times.items()}
    ips = {k: n_train * case.epochs / med[k] for k in med}
    acc = {k: statistics.median(v) for k, v in accs.items()}
    out = {
        "setup": f"{n_train} train images {case.image_size}x{case.image_size}x{case.channels}, batch "
        f"{case.batch_size}, {case.epochs} epochs, {rounds} rounds, {torch.get_num_threads()} threads",
        "auto_choice": {k: speed[k] for k in ("precision", "channels_last", "compile")},
        "auto_step_ms": speed["step_ms"],
        "images_per_s": {k: round(v, 1) for k, v in ips.items()},
        "speed_ratio_auto_vs_hand": round(ips["auto"] / ips["hand"], 3),
        "overhead_ratio_fp32_vs_hand": round(ips["fp32"] / ips["hand"], 3),
        "val_acc": {k: round(v, 4) for k, v in acc.items()},
        "val_acc_auto_minus_hand": round(acc["auto"] - acc["hand"], 4),
        "val_acc_auto_minus_fp32": round(acc["auto"] - acc["fp32"], 4),
        "first_auto_run_s": round(first_s, 1),
        "median_auto_run_s": round(med["auto"], 1),
        "load_avg": [round(load, 1), round(os.getloadavg()[0], 1)],
    }
    print(f"{case.name}: {out['setup']} (load {load:.1f} -> {os.getloadavg()[0]:.1f})")
    print(f"  auto chose {out['auto_choice']} from step times {speed['step_ms']} ms")
    print(
        f"  first auto run (measuring once): {first_s:.1f} s; later runs read the cache: {med['auto']:.1f} s"
    )
    print(f"  hand-written fp32 loop : {ips['hand']:8.1f} img/s  val_acc {acc['hand']:.4f}")
    print(
        f"  framework fit(), auto  : {ips['auto']:8.1f} img/s  {out['speed_ratio_auto_vs_hand']:.3f}x  "
        f"val_acc {acc['auto']:.4f} ({acc['auto'] - acc['hand']:+.4f} vs hand-written, "
        f"{acc['auto'] - acc['fp32']:+.4f} vs framework fp32)"
    )
    print(
        f"  framework fit(), fp32  : {ips['fp32']:8.1f} img/s  {out['overhead_ratio_fp32_vs_hand']:.3f}x  "
        f"val_acc {acc['fp32']:.4f}  (the framework's overhead)"
    )
    return out


def record(name: str, figures: dict[str, Any], rounds: int) -> None:
    """Merge one case into results.json at once (the other cases' last figures stay)."""
    previous = json.loads(RESULTS.read_text()).get("trainer_speed", {}) if RESULTS.is_file() else {}
    cases = {**previous.get("cases", {}), name: figures}
    headline = "; ".join(
        f"{n} x{c['speed_ratio_auto_vs_hand']:.2f} auto ({c['auto_choice']['precision']}"
        f"{', channels_last' if c['auto_choice']['channels_last'] else ''}), "
        f"x{c['overhead_ratio_fp32_vs_hand']:.2f} fp32, val_acc {c['val_acc_auto_minus_hand']:+.3f}"
        for n, c in cases.items()
    )
    measures = (
        "images/s of the whole fit() (ml-train's run_training: auto speed settings, and fp32 = the overhead) "
        "vs a hand-written fp32 loop that also evaluates and checkpoints every epoch; same data, model, "
        f"batch, optimizer; median of {rounds} rotated rounds; val_acc: auto minus hand-written"
    )
    record_result("trainer_speed", {"measures": measures, "result": headline, "cases": cases})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    p.add_argument("--data", type=Path, default=REPO / "data" / "digits")
    args = p.parse_args()
    unknown = [c for c in args.cases.split(",") if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    digits = ensure_digits(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            record(name, bench_case(CASES[name], digits, Path(tmp), args.rounds), args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
