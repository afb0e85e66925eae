#!/usr/bin/env python
"""Memory and speed of the data pipelines as the image folder grows.

Generates JPEG folders (10 classes, about `--side` px, class-dependent colours plus noise) of each
size in `--sizes` in a temp dir, then per size trains one epoch of `ml-train` at `--image-size` px
with a small model for `data.pipeline` = memory, stream and auto, and the hand-written baseline: a
torchvision `ImageFolder` + `DataLoader` + `transforms.v2` loop with the same workers, transforms
(squash-resize to the image size, random crop with padding, horizontal flip, normalise), model and
optimizer. The model is the built-in `mlp` with no hidden layer (a linear classifier on the pixels)
by default: any conv net at 224 px costs a 2-core CPU more per image than decoding it, which would hide
the pipelines behind the model (`--arch simple_cnn` measures that case). Measured per run: training
images/s (train + validation pass of the epoch, from the
epoch's own timer) and peak memory of the process tree (PSS summed over the process and its
DataLoader workers, sampled every 50 ms: shared pages are counted once). The memory pipeline is
measured with its cache already built (it decodes once per folder). Rounds alternate the order of
the four runs; medians are reported.

Targets (issue 11): stream peak memory grows <= 1.3x from the smallest to the largest size; stream
images/s >= 0.95x hand-written; auto's data memory (its peak minus stream's peak at that size) never
exceeds its budget; memory images/s >= 2x hand-written on the smallest size.

    python benchmarks/data_scaling.py --sizes 2000,8000,32000          # the issue's setting (long)
    python benchmarks/data_scaling.py --sizes 200,800 --image-size 64  # a quick check
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import record_result

BIN = Path(sys.executable).parent
CLASSES = 10
BATCH = 64
PSS_NOISE = 0.05  # peak PSS of two identical runs differs by up to this share
LR = 1e-3


# ---------------------------------------------------------------- data


def _write_image(args: tuple[Path, int, int, int]) -> None:
    from PIL import Image

    path, label, side, seed = args
    rng = np.random.default_rng(seed)
    colour = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256], dtype=np.float32)
    h, w = side + int(rng.integers(-16, 17)), side + int(rng.integers(-16, 17))
    pixels = colour + rng.normal(0, 40, (h, w, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)


def make_folder(root: Path, n: int, side: int) -> Path:
    jobs = []
    for i in range(n):
        label = i % CLASSES
        folder = root / "raw" / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((folder / f"{i:06d}.jpg", label, side, i))
    with multiprocessing.Pool(os.cpu_count() or 1) as pool:
        pool.map(_write_image, jobs, chunksize=64)
    return root


# ---------------------------------------------------------------- peak memory of a process tree


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return pids


def _pss_mb(pid: int) -> float:
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """(peak PSS MB of the process tree, stdout) of a command."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peak = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _pss_mb(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return peak[0], out


# ---------------------------------------------------------------- the framework


def framework_run(
    data: Path, runs: Path, pipeline: str, args: argparse.Namespace, budget: int | None
) -> dict:
    import yaml

    name = f"{data.name}_{pipeline}_{time.monotonic_ns()}"
    pad = args.image_size // 16
    cfg = {
        "data": {
            "dataset_name": data.name, "data_dir": str(data), "image_size": args.image_size, "channels": 3,
            "val_split": 0.1, "test_split": 0.0, "pipeline": pipeline, "num_workers": args.workers,
            "memory_budget_mb": budget, "cache_dir": str(data / ".cache"),
            "augmentation": {"random_crop": True, "crop_padding": pad, "horizontal_flip": True},
        },
        "model": {"architecture": args.arch, "width": args.width, "depth": args.depth, "dropout": 0.0},
        "training": {"num_epochs": 1, "batch_size": BATCH, "device": "cpu", "seed": 0, "precision": "fp32",
                     "num_threads": args.threads,
                     "channels_last": False, "compile": False},
        "optimizer": {"name": "adamw", "lr": LR},
        "scheduler": {"name": "none"},
        "output": {"runs_dir": str(runs), "name": name},
    }  # fmt: skip
    path = runs / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    peak, _ = run_measured([str(BIN / "ml-train"), "--config", str(path)])
    metrics = json.loads((runs / name / "metrics.json").read_text())
    splits = json.loads((runs / name / "splits.json").read_text())["counts"]
    log = (runs / name / "train.log").read_text()
    chosen = next(
        line.split("data pipeline: ", 1)[1] for line in log.splitlines() if "data pipeline: " in line
    )
    seconds = metrics["history"][0]["epoch_time"]
    return {"peak_mb": peak, "images_per_s": (splits["train"] + splits["val"]) / seconds, "choice": chosen}


def baseline_run(data: Path, args: argparse.Namespace) -> dict:
    peak, out = run_measured(
        [sys.executable, __file__, "--baseline", str(data), "--workers", str(args.workers),
         "--image-size", str(args.image_size), "--width", str(args.width), "--depth", str(args.depth),
         "--threads", str(args.threads), "--arch", args.arch]
    )  # fmt: skip
    return {"peak_mb": peak, **json.loads(out.strip().splitlines()[-1])}


# ---------------------------------------------------------------- the hand-written baseline


def handwritten(data: Path, workers: int, size: int, arch: str, width: int, depth: int) -> dict:
    """ImageFolder + DataLoader + transforms.v2, 90/10 split, one epoch of the same model and optimizer."""
    import torch
    import torchvision
    from torch import nn
    from torchvision.transforms import v2

    torch.manual_seed(0)
    common = [v2.ToImage(), v2.Resize((size, size), antialias=True)]
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.25] * 3)]
    train_tf = v2.Compose(
        [*common, v2.RandomCrop(size, padding=size // 16), v2.RandomHorizontalFlip(), *tail]
    )
    full = torchvision.datasets.ImageFolder(str(data / "raw"))
    order = np.random.default_rng(0).permutation(len(full))
    n_val = len(full) // 10
    train = torchvision.datasets.ImageFolder(str(data / "raw"), transform=train_tf)
    val = torchvision.datasets.ImageFolder(str(data / "raw"), transform=v2.Compose([*common, *tail]))
    loader_args = {"num_workers": workers, "persistent_workers": workers > 0}
    train_loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(train, order[n_val:].tolist()), batch_size=BATCH, shuffle=True, **loader_args
    )
    val_loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(val, order[:n_val].tolist()), batch_size=256, num_workers=workers
    )
    layers: list[nn.Module] = []
    if arch == "mlp":  # the built-in MLP: flatten, depth x (Linear-BN-ReLU), linear head
        features = 3 * size * size
        layers.append(nn.Flatten())
        for _ in range(depth):
            layers += [nn.Linear(features, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            features = width
        model = nn.Sequential(*layers, nn.Linear(features, CLASSES))
    else:  # the built-in SimpleCNN: depth x (2 x conv-BN-ReLU, max-pool), global pool, linear head
        c_in = 3
        for i in range(depth):
            c_out = width * 2**i
            for j in range(2):
                layers += [nn.Conv2d(c_in if j == 0 else c_out, c_out, 3, padding=1, bias=False),
                           nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]  # fmt: skip
            layers.append(nn.MaxPool2d(2))
            c_in = c_out
        model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, CLASSES))
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    start = time.perf_counter()
    model.train()
    for x, y in train_loader:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    correct = 0
    with torch.inference_mode():
        for x, y in val_loader:
            correct += int((model(x).argmax(1) == y).sum())
    seconds = time.perf_counter() - start
    return {"images_per_s": len(full) / seconds, "val_acc": correct / max(n_val, 1)}


# ---------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="2000,8000,32000", help="images per folder, comma-separated")
    p.add_argument("--side", type=int, default=256, help="generated image side (px, +-16)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--workers", type=int, default=2, help="DataLoader / decode workers")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads of the training process")
    p.add_argument("--arch", choices=("mlp", "simple_cnn"), default="mlp", help="the built-in model")
    p.add_argument(
        "--width", type=int, default=8, help="mlp: hidden units; simple_cnn: first block's channels"
    )
    p.add_argument("--depth", type=int, default=0, help="mlp: hidden layers (0: linear); simple_cnn: blocks")
    p.add_argument("--baseline", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.baseline is not None:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(handwritten(args.baseline, args.workers, args.image_size, args.arch, args.width,
                                     args.depth)))  # fmt: skip
        return
    from ml_framework.data.cache import decoded_nbytes

    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="data_scaling_") as tmp:
        root = Path(tmp)
        # auto's budget: room for the smallest decoded set, not the larger ones
        budget = int(2 * decoded_nbytes(sizes[0], args.image_size, 3) / 2**20) + 1
        for n in sizes:
            t0 = time.perf_counter()
            data = make_folder(root / f"jpeg_{n}", n, args.side)
            print(f"{n} images generated in {time.perf_counter() - t0:.0f} s", flush=True)
            framework_run(data, root / "runs", "memory", args, None)  # builds the decoded cache once
            runs: dict[str, list[dict]] = {k: [] for k in ("memory", "stream", "auto", "handwritten")}
            for r in range(args.rounds):
                order = list(runs) if r % 2 == 0 else list(reversed(runs))
                for kind in order:
                    if kind == "handwritten":
                        runs[kind].append(baseline_run(data, args))
                    else:
                        runs[kind].append(
                            framework_run(data, root / "runs", kind, args, budget if kind == "auto" else None)
                        )
            row: dict[str, Any] = {"images": n}
            for kind, results in runs.items():
                row[f"{kind}_images_per_s"] = statistics.median(x["images_per_s"] for x in results)
                row[f"{kind}_peak_mb"] = statistics.median(x["peak_mb"] for x in results)
            row["auto_choice"] = runs["auto"][0]["choice"]
            row["auto_budget_mb"] = budget
            rows.append(row)
            print(json.dumps(row), flush=True)
    report(rows, {k: v for k, v in vars(args).items() if k != "baseline"})


def _auto_excess_mb(row: dict[str, Any]) -> float:
    """Memory auto holds beyond what it may: its peak over stream's, less the budget when it chose
    memory, less PSS_NOISE of stream's peak (two identical runs differ by that much)."""
    allowed = row["auto_budget_mb"] if row["auto_choice"].startswith("memory") else 0
    return row["auto_peak_mb"] - row["stream_peak_mb"] - allowed - PSS_NOISE * row["stream_peak_mb"]


def report(rows: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    """Print the checks against the targets and record them in benchmarks/results.json."""
    first, last = rows[0], rows[-1]
    checks = {
        "stream_peak_growth": last["stream_peak_mb"] / first["stream_peak_mb"],
        "stream_vs_handwritten_speed": min(
            r["stream_images_per_s"] / r["handwritten_images_per_s"] for r in rows
        ),
        "auto_excess_mb": max(_auto_excess_mb(r) for r in rows),
        "memory_vs_handwritten_speed_smallest": first["memory_images_per_s"]
        / first["handwritten_images_per_s"],
    }
    targets = {
        "stream_peak_growth": checks["stream_peak_growth"] <= 1.3,
        "stream_vs_handwritten_speed": checks["stream_vs_handwritten_speed"] >= 0.95,
        "auto_within_budget": checks["auto_excess_mb"] <= 0,
        "memory_2x_handwritten_smallest": checks["memory_vs_handwritten_speed_smallest"] >= 2.0,
    }
    print(json.dumps({"checks": checks, "targets_met": targets}, indent=1))
    result = (
        f"{settings['sizes']} images at {settings['image_size']} px, {settings['workers']} worker(s): stream "
        f"peak memory x{checks['stream_peak_growth']:.2f} smallest to largest; stream "
        f"{checks['stream_vs_handwritten_speed']:.2f}x the hand-written images/s (worst size); memory "
        f"{checks['memory_vs_handwritten_speed_smallest']:.1f}x on the smallest; auto within its budget: "
        f"{targets['auto_within_budget']}"
    )
    record_result(
        "data_scaling",
        {"measures": "peak memory and images/s of one ml-train epoch, data.pipeline memory/stream/auto vs a "
         "hand-written ImageFolder + DataLoader + transforms.v2 loop, as the JPEG folder grows",
         "result": result, "settings": settings, "rows": rows, "checks": checks, "targets_met": targets},
    )  # fmt: skip


if __name__ == "__main__":
    main()
