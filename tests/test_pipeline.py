"""Data pipelines: memory (decoded cache) and stream (DataLoader), auto choice, v2 augmentation keys."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
import yaml
from conftest import run_cli, tiny_config
from PIL import Image

from ml_framework.data.cache import clear_memory_cache, load_images
from ml_framework.data.folder import scan_image_folder
from ml_framework.data.loader import TensorBatches
from ml_framework.data.pipeline import choose_pipeline, default_budget_mb
from ml_framework.data.stream import StreamBatches
from ml_framework.errors import ConfigError
from ml_framework.training.images import eval_batch_size
from ml_framework.training.run import run_training

SIZE = 16


@pytest.fixture(autouse=True)
def _fresh_memo() -> None:
    clear_memory_cache()


def same_image_folder(root: Path, per_class: int = 6) -> Path:
    """Two classes of one identical noise image each: any difference inside a batch is augmentation."""
    pixels = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    for c in ("a", "b"):
        (root / "raw" / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(pixels).save(root / "raw" / c / f"{i}.png")
    return root


def both_pipelines(data: Path, aug: dict[str, Any], *, train: bool = True) -> dict[str, Any]:
    """One training batch of all 12 images from each pipeline, built as run_training builds them."""
    folder = scan_image_folder(data)
    images = load_images(data, SIZE, 3)
    common = {"batch_size": 12, "seed": 0, "augmentation": aug, "mean": [0.5] * 3, "std": [0.25] * 3}
    memory = TensorBatches(images.images, images.labels, shuffle=train, train=train, num_classes=2, **common)
    stream = StreamBatches(
        folder.files, folder.labels, decoded_size=SIZE, image_size=SIZE, channels=3, train=train,
        num_classes=2, **common,
    )  # fmt: skip
    return {"memory": next(iter(memory)), "stream": next(iter(stream))}


AUGMENTATIONS = {
    "random_crop": {"random_crop": True, "crop_padding": 3},
    "horizontal_flip": {"horizontal_flip": True},
    "vertical_flip": {"vertical_flip": True},
    "random_resized_crop": {"random_resized_crop": True, "resized_crop_scale": [0.2, 0.6]},
    "color_jitter": {"color_jitter": 0.8},
    "auto_augment_trivialaugment": {"auto_augment": "trivialaugment"},
    "auto_augment_randaugment": {"auto_augment": "randaugment"},
    "auto_augment_autoaugment": {"auto_augment": "autoaugment"},
    "random_erasing": {"random_erasing": 1.0},
}


@pytest.mark.parametrize("key", list(AUGMENTATIONS))
def test_each_augmentation_key_varies_samples_in_both_pipelines(key: str, tmp_path: Path) -> None:
    data = same_image_folder(tmp_path / "same")
    plain = both_pipelines(data, {})
    for name, (x, y) in both_pipelines(data, AUGMENTATIONS[key]).items():
        assert x.shape == (12, 3, SIZE, SIZE) and x.dtype == torch.float32 and y.dtype == torch.int64, name
        # per-sample randomness: identical inputs come out different within one batch
        distinct = {tuple(row.flatten().tolist()) for row in x}
        assert len(distinct) >= (2 if key.endswith("flip") else 3), (name, key, len(distinct))
        assert not torch.equal(x, plain[name][0]), (name, key)
    # without augmentation every sample of the batch is the same image in both pipelines
    for x, _ in plain.values():
        assert torch.equal(x, x[:1].expand_as(x))


@pytest.mark.parametrize("key", ["mixup_alpha", "cutmix_alpha", "both"])
def test_mixup_cutmix_give_soft_targets_in_both_pipelines(key: str, tmp_path: Path) -> None:
    data = tmp_path / "noise"
    rng = np.random.default_rng(1)
    for c in ("a", "b"):
        (data / "raw" / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(
                data / "raw" / c / f"{i}.png"
            )
    aug = {"mixup_alpha": 1.0, "cutmix_alpha": 1.0} if key == "both" else {key: 1.0}
    for name, (_, y) in both_pipelines(data, aug).items():
        assert y.shape == (12, 2) and y.dtype == torch.float32, name
        assert torch.allclose(y.sum(1), torch.ones(12)), name
        assert ((y > 0) & (y < 1)).any(), name  # mixed, not one-hot
    # evaluation batches are never mixed
    for _, y in both_pipelines(data, aug, train=False).values():
        assert y.dtype == torch.int64


def test_memory_and_stream_give_identical_batches_without_augmentation(digits_dir: Path) -> None:
    """Same order (one generator per (seed, epoch)), remainder rule, decoding and normalisation."""
    folder = scan_image_folder(digits_dir)
    images = load_images(digits_dir, 8, 1)
    idx = np.arange(0, len(folder.files), 7)
    common = {"batch_size": 50, "seed": 3, "mean": [0.3], "std": [0.4], "train": True}
    memory = TensorBatches(images.images, images.labels, indices=idx, shuffle=True, **common)
    stream = StreamBatches(
        [folder.files[i] for i in idx], [folder.labels[i] for i in idx], decoded_size=8, image_size=8,
        channels=1, **common,
    )  # fmt: skip
    for epoch in (1, 2):
        memory.set_epoch(epoch)
        stream.set_epoch(epoch)
        pairs = list(zip(memory, stream, strict=True))
        assert len(pairs) == len(memory) == len(stream)
        for (xm, ym), (xs, ys) in pairs:
            assert torch.equal(ym, ys) and torch.allclose(xm, xs)


def test_evaluation_center_crops_the_decoded_images(tmp_path: Path) -> None:
    data = same_image_folder(tmp_path / "same")
    folder = scan_image_folder(data)
    images = load_images(data, SIZE, 3)
    args = {"batch_size": 12, "seed": 0, "shuffle": False, "train": False, "image_size": 10}
    x_mem, _ = next(iter(TensorBatches(images.images, images.labels, **args)))
    stream = StreamBatches(
        folder.files,
        folder.labels,
        decoded_size=SIZE,
        channels=3,
        **{k: v for k, v in args.items() if k != "shuffle"},
    )
    x_str, _ = next(iter(stream))
    expected = images.images[:, :, 3:13, 3:13].float() / 255
    assert torch.allclose(x_mem, expected) and torch.allclose(x_str, expected)


def test_auto_choice_and_budget() -> None:
    stream = choose_pipeline("auto", 2 * 2**20, budget_mb=1)
    assert stream.pipeline == "stream" and "over the 1 MB budget" in stream.reason
    memory = choose_pipeline("auto", 2**19, budget_mb=1)
    assert memory.pipeline == "memory" and "within" in memory.reason
    assert choose_pipeline("stream", 1, None).pipeline == "stream"
    assert default_budget_mb(1) > default_budget_mb(4) >= 0
    with pytest.raises(ConfigError, match=r"data\.pipeline"):
        choose_pipeline("disk", 1, None)


def test_cache_key_is_a_stat_fingerprint_and_the_cache_is_memory_mapped(tmp_path: Path) -> None:
    data = same_image_folder(tmp_path / "same")
    load_images(data, SIZE, 3)
    clear_memory_cache()
    loaded = load_images(data, SIZE, 3)
    (array,) = (data / ".cache").glob("images_*.npy")
    assert str(array) in Path("/proc/self/maps").read_text()  # shared pages, not a private copy
    meta = json.loads(array.with_suffix(".json").read_text())
    assert len(meta["content_hash"]) == 40 and len(meta["files"]) == len(loaded)
    # same bytes, new mtime: a new key (the key never reads file contents)
    st = os.stat(data / "raw" / "a" / "0.png")
    os.utime(data / "raw" / "a" / "0.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    clear_memory_cache()
    load_images(data, SIZE, 3)
    assert len(list((data / ".cache").glob("images_*.npy"))) == 2


@pytest.mark.parametrize(
    ("batch", "side", "channels", "expected"),
    [(64, 8, 1, 256), (64, 64, 3, 256), (64, 224, 3, 111), (128, 224, 3, 128), (16, 512, 3, 21)],
)
def test_evaluation_batches_are_large_within_a_memory_bound(
    batch: int, side: int, channels: int, expected: int
) -> None:
    """256 images, or fewer where that would be more than 64 MB of float input (a stream pipeline's
    evaluation then holds no more in flight on a large split than on a small one)."""
    assert eval_batch_size(batch, side, channels) == expected


HEAP_SCRIPT = """
import os
import numpy as np
from ml_framework.data.stream import release_free_heap

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

np.zeros(200_000, np.uint8)  # freeing one mmapped buffer raises glibc's mmap threshold above its size
big, small = [], []
for _ in range(500):  # 100 MB of image-sized buffers in the heap, each pinned by a small one after it
    big.append(np.ones(200_000, np.uint8))
    small.append(np.ones(2_000, np.uint8))
del big
before = rss_mb()
release_free_heap()
print(before - rss_mb())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_stream_workers_give_freed_image_buffers_back() -> None:
    """What keeps a stream worker's memory flat over an epoch: freed decode buffers scattered in the
    heap go back to the OS (without it they stayed, and a worker grew with the batches it decoded)."""
    out = subprocess.run([sys.executable, "-c", HEAP_SCRIPT], capture_output=True, text=True, check=True)
    assert float(out.stdout) > 50  # MB of the 100 MB freed


def test_stream_skips_unreadable_files_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = same_image_folder(tmp_path / "same")
    (data / "raw" / "a" / "broken.png").write_bytes(b"not an image")
    folder = scan_image_folder(data)
    stream = StreamBatches(
        folder.files, folder.labels, decoded_size=SIZE, image_size=SIZE, channels=3, batch_size=64,
        train=True, seed=0,
    )  # fmt: skip
    with caplog.at_level("WARNING", logger="ml_framework.data"):
        sizes = [len(y) for _, y in stream]
    assert sizes == [12]
    assert any("broken.png" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("aug", "fragment"),
    [
        ({"resized_crop_scale": [0.9, 0.1], "random_resized_crop": True}, "resized_crop_scale"),
        ({"mixup_alpha": -1.0}, "mixup_alpha"),
        ({"random_erasing": 2.0}, "random_erasing"),
        ({"color_jitter": -0.5}, "color_jitter"),
    ],
)
def test_bad_augmentation_values_are_config_errors(
    aug: dict[str, Any], fragment: str, tmp_path: Path
) -> None:
    data = same_image_folder(tmp_path / "same")
    with pytest.raises(ConfigError, match=fragment):
        both_pipelines(data, aug)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"data": {"pipeline": "disk"}}, "data.pipeline"),
        ({"data": {"augmentation": {"auto_augment": "best"}}}, "auto_augment"),
        ({"data": {"image_size": 8, "resize_size": 6}}, "resize_size"),
        ({"data": {"mean": [0.5]}}, "data.std"),
        ({"data": {"mean": [0.5, 0.5], "std": [0.2, 0.2]}}, "data.mean"),
    ],
)
def test_bad_pipeline_keys_fail_before_training(
    overrides: dict[str, Any], fragment: str, digits_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        cfg = tiny_config(digits_dir, tmp_path / "runs", **overrides)
        run_training(cfg, progress=False)


@pytest.mark.slow
def test_stream_and_memory_reach_the_same_val_acc_on_digits(digits_dir: Path, tmp_path: Path) -> None:
    aug = {"augmentation": {"random_crop": True, "crop_padding": 1}}
    results = {}
    for pipeline in ("memory", "stream"):
        cfg = tiny_config(
            digits_dir,
            tmp_path / "runs",
            data={"pipeline": pipeline, **aug},
            model={"width": 16},
            training={"num_epochs": 12},
            output={"name": pipeline},
        )
        results[pipeline] = run_training(cfg, progress=False)
        log = (results[pipeline].run_dir / "train.log").read_text()
        assert f"data pipeline: {pipeline} (data.pipeline={pipeline})" in log
    accs = {k: r.best["val_acc"] for k, r in results.items()}
    assert accs["memory"] > 0.9 and abs(accs["memory"] - accs["stream"]) <= 0.02, accs


@pytest.mark.slow
def test_auto_with_a_1mb_budget_streams_and_says_so(digits_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(digits_dir, tmp_path / "runs", data={"image_size": 32}, training={"num_epochs": 1})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_plain(cfg)))
    r = run_cli(["ml-train", "--config", str(path), "data.memory_budget_mb=1", "output.name=auto"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    said = " ".join(r.stdout.split())  # rich wraps long lines
    assert "data pipeline: stream (data.pipeline=auto: the decoded images take 1.8 MB, over the 1 MB" in said
    log = (tmp_path / "runs" / "auto" / "train.log").read_text()
    assert "data pipeline: stream" in log
    saved = yaml.safe_load((tmp_path / "runs" / "auto" / "config.yaml").read_text())
    assert saved["data"]["memory_budget_mb"] == 1 and saved["data"]["resize_size"] == 32


def _plain(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in plain.items() if v is not None}


@pytest.mark.slow
def test_both_pipelines_run_inside_ml_search_with_pruning(digits_dir: Path, tmp_path: Path) -> None:
    cfg = _plain(tiny_config(digits_dir, tmp_path / "runs", training={"num_epochs": 3}))
    cfg["search"] = {
        "n_trials": 4,
        "sampler": {"type": "GridSampler"},
        "pruner": {"type": "MedianPruner", "n_startup_trials": 1, "n_warmup_steps": 0},
        "search_space": {
            "data.pipeline": {"type": "categorical", "choices": ["memory", "stream"]},
            "optimizer.lr": {"type": "categorical", "choices": [0.01, 0.0001]},
        },
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = run_cli(["ml-search", "--config", str(path), "--study-name", "pipes"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    study = optuna.load_study(
        study_name="pipes", storage=f"sqlite:///{tmp_path / 'runs' / 'optuna_studies' / 'optuna.db'}"
    )
    trials = study.get_trials(deepcopy=False)
    assert {t.params["data.pipeline"] for t in trials} == {"memory", "stream"}
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    for t in trials:
        log = (Path(t.user_attrs["run_dir"]) / "train.log").read_text()
        assert f"data pipeline: {t.params['data.pipeline']}" in log
