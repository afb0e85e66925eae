#!/usr/bin/env python
"""Images/second of the framework's training epoch vs a minimal hand-written PyTorch loop over the same
in-memory tensors, model, batch size and optimizer; alternated in one process. Prints the ratio
(framework / hand-written); the goal is >= 0.95.

    python benchmarks/trainer_overhead.py [--data data/digits] [--rounds 5] [--epochs-per-round 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO / "data" / "digits")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--epochs-per-round", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=16)
    args = p.parse_args()
    if not (args.data / "raw").is_dir():
        subprocess.run(
            [sys.executable, str(REPO / "scripts" / "make_digits.py"), "--out", str(args.data)], check=True
        )

    from ml_framework.config import from_container
    from ml_framework.models import create_model
    from ml_framework.training.optim import create_optimizer
    from ml_framework.training.run import prepare_data, seed_everything
    from ml_framework.training.trainer import Trainer

    cfg = from_container(
        {
            "data": {
                "data_dir": str(args.data),
                "image_size": args.image_size,
                "channels": 1,
                "augmentation": {"random_crop": False, "normalize": True},
            },
            "model": {"architecture": "simple_cnn"},
            "training": {"batch_size": args.batch_size, "device": "cpu", "deterministic": False},
            "optimizer": {"name": "adamw", "lr": 1e-3},
            "output": {"runs_dir": tempfile.mkdtemp()},
        }
    )
    device = torch.device("cpu")
    seed_everything(0, deterministic=False)
    data = prepare_data(cfg, device)
    n_classes = len(data.classes)

    def fresh() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = create_model(cfg.model, channels=1, image_size=args.image_size, num_classes=n_classes)
        return model, create_optimizer(model.parameters(), cfg.optimizer)

    # The same normalised tensors for the hand-written loop.
    x_all = torch.cat([x for x, _ in data.train])
    y_all = torch.cat([y for _, y in data.train])
    n = len(y_all)

    def handwritten(epochs: int) -> float:
        model, opt = fresh()
        loss_fn = torch.nn.CrossEntropyLoss()
        model.train()
        start = time.perf_counter()
        for _ in range(epochs):
            perm = torch.randperm(n)
            total = 0.0
            for i in range(0, n, args.batch_size):
                idx = perm[i : i + args.batch_size]
                xb, yb = x_all[idx], y_all[idx]
                opt.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                opt.step()
                total += loss.item()
        return epochs * n / (time.perf_counter() - start)

    def framework(epochs: int) -> float:
        model, opt = fresh()
        trainer = Trainer(
            model, opt, None, data.train, data.val, num_classes=n_classes, num_epochs=epochs, device=device
        )
        start = time.perf_counter()
        for epoch in range(1, epochs + 1):
            trainer.train_epoch(epoch)
        return epochs * len(data.train.labels) / (time.perf_counter() - start)

    handwritten(1), framework(1)  # warm-up
    hand, ours = [], []
    for _ in range(args.rounds):
        hand.append(handwritten(args.epochs_per_round))
        ours.append(framework(args.epochs_per_round))
    h, f = statistics.median(hand), statistics.median(ours)
    print(
        f"model simple_cnn, {n} train images {args.image_size}x{args.image_size}, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, {args.rounds} alternated rounds"
    )
    print(f"hand-written loop: {h:,.0f} img/s (median)")
    print(f"framework epoch:   {f:,.0f} img/s (median)")
    print(f"ratio framework / hand-written: {f / h:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
