#!/usr/bin/env python
"""The hand-written baseline of benchmarks/search_overhead.py: an Optuna search written the way a user
would without ml_framework (it imports nothing from it). It reads the same image folder with PIL, makes
its own stratified 70/15/15 split, defines its own CNN of the same size as the framework's simple_cnn
(`depth` blocks of 2 x conv3x3-BN-ReLU then max-pool, global average pool, dropout, linear), trains
with AdamW and a cosine schedule, evaluates the validation split every epoch (reported to the trial
for pruning), evaluates the test split with the best epoch's weights, and runs `study.optimize` on an
SQLite storage with a seeded TPE sampler over lr and dropout.

    python benchmarks/handwritten_search.py --data DIR --storage sqlite:///f.db --study-name S
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import optuna
import torch
from PIL import Image
from torch import nn


def load_folder(root: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of `root/raw/<class>/*.png` as float [N, 1, size, size] in 0..1, and integer labels."""
    classes = sorted(p for p in (root / "raw").iterdir() if p.is_dir())
    images, labels = [], []
    for label, folder in enumerate(classes):
        for path in sorted(folder.glob("*.png")):
            with Image.open(path) as im:
                im = im.convert("L").resize((size, size), Image.Resampling.BILINEAR)
                images.append(np.asarray(im, dtype=np.uint8))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).float().div_(255).unsqueeze(1)
    return x, torch.tensor(labels)


def split(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stratified train/val/test indices, 70/15/15 of every class."""
    rng = np.random.default_rng(seed)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for c in labels.unique().tolist():
        idx = rng.permutation(np.flatnonzero(labels.numpy() == c))
        n_test, n_val = round(len(idx) * 0.15), round(len(idx) * 0.15)
        parts[2].extend(idx[:n_test])
        parts[1].extend(idx[n_test : n_test + n_val])
        parts[0].extend(idx[n_test + n_val :])
    return tuple(torch.tensor(sorted(p)) for p in parts)  # type: ignore[return-value]


def cnn(num_classes: int, width: int, depth: int, dropout: float, size: int) -> nn.Module:
    layers: list[nn.Module] = []
    c_in = 1
    for i in range(depth):
        c_out = width * 2**i
        for j in range(2):
            layers += [nn.Conv2d(c_in if j == 0 else c_out, c_out, 3, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]  # fmt: skip
        if size // 2 >= 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        c_in = c_out
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, num_classes)
    )


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), 256):
        out = model(x[i : i + 256])
        loss += nn.functional.cross_entropy(out, y[i : i + 256], reduction="sum").item()
        correct += (out.argmax(1) == y[i : i + 256]).sum().item()
    return loss / len(x), correct / len(x)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--storage", required=True)
    p.add_argument("--study-name", required=True)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    x, y = load_folder(args.data, args.image_size)
    train, val, test = split(y, args.seed)
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    num_classes = int(y.max()) + 1

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("optimizer.lr", 1e-4, 3e-2, log=True)
        dropout = trial.suggest_float("model.dropout", 0.0, 0.5)
        torch.manual_seed(args.seed)
        model = cnn(num_classes, args.width, args.depth, dropout, args.image_size)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
        best, best_state = -1.0, None
        for epoch in range(1, args.epochs + 1):
            model.train()
            order = train[torch.randperm(len(train))]
            for i in range(0, len(order), args.batch_size):
                idx = order[i : i + args.batch_size]
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
            sched.step()
            _, acc = evaluate(model, x[val], y[val])
            if acc > best:
                best, best_state = acc, copy.deepcopy(model.state_dict())
            trial.report(acc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        model.load_state_dict(best_state)
        trial.set_user_attr("test_acc", evaluate(model, x[test], y[test])[1])
        return best

    study = optuna.create_study(
        study_name=args.study_name,
        storage=args.storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
        pruner=optuna.pruners.NopPruner(),
    )
    study.optimize(objective, n_trials=args.trials)
    print(f"best val_acc {study.best_value:.4f} with {study.best_params}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
