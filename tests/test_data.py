"""Data pipeline: decoding + cache, splits and folds, in-memory batches and augmentation."""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ml_framework.data import cache as cache_mod
from ml_framework.data.cache import clear_memory_cache, load_images
from ml_framework.data.loader import MIN_TRAIN_BATCH, TensorBatches, batch_bounds, compute_mean_std
from ml_framework.data.splits import make_splits
from ml_framework.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fresh_memo() -> None:
    clear_memory_cache()


def save(path: Path, image: Image.Image, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def gray16(value: int, size: tuple[int, int] = (6, 6)) -> Image.Image:
    return Image.fromarray(np.full(size[::-1], value, dtype=np.uint16))


@pytest.fixture
def mixed_dir(tmp_path: Path) -> Path:
    """Two classes, mixed sizes and modes, one corrupt file, and files that are not images."""
    raw = tmp_path / "mixed" / "raw"
    save(raw / "cat" / "rgb.png", Image.new("RGB", (10, 12), (200, 10, 10)))
    save(raw / "cat" / "gray.png", Image.new("L", (20, 20), 100))
    save(raw / "cat" / "clear.png", Image.new("RGBA", (8, 8), (255, 255, 255, 0)))
    save(raw / "cat" / "palette.gif", Image.new("P", (5, 9), 3))
    save(raw / "dog" / "photo.jpg", Image.new("RGB", (16, 16), (10, 200, 10)), quality=95)
    save(raw / "dog" / "la.png", Image.new("LA", (7, 7), (50, 255)))
    save(raw / "dog" / "deep.png", gray16(0x8080))
    (raw / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (raw / "dog" / "notes.txt").write_text("not an image")
    (raw / "dog" / ".DS_Store").write_bytes(b"\0\0")
    return tmp_path / "mixed"


# ---------------------------------------------------------------- bundled dataset


def test_make_digits_builds_real_digits_and_is_idempotent(
    digits_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    import importlib.util

    classes = sorted(p.name for p in (digits_dir / "raw").iterdir())
    assert classes == [str(d) for d in range(10)]
    files = list((digits_dir / "raw").rglob("*.png"))
    assert len(files) == 1797
    with Image.open(digits_dir / "raw" / "0" / "0.png") as im:
        assert (im.mode, im.size) == ("L", (8, 8))
        allowed = {round(k * 255 / 16) for k in range(17)}  # 0..16 -> 0..255
        assert set(np.asarray(im).ravel().tolist()) <= allowed
    spec = importlib.util.spec_from_file_location("make_digits", REPO / "scripts" / "make_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    before = {p: p.stat().st_mtime_ns for p in files[:20]}
    assert module.main(["--out", str(digits_dir)]) == 0
    assert "nothing written" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in files[:20]}


# ---------------------------------------------------------------- decoding


@pytest.mark.parametrize("channels", [1, 3])
def test_mixed_folder_decodes_and_skips_the_corrupt_file(
    mixed_dir: Path, channels: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ml_framework.data"):
        data = load_images(mixed_dir, 8, channels)
    assert data.images.shape == (7, channels, 8, 8) and data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64
    assert data.classes == ("cat", "dog")
    assert data.skipped == ("dog/broken.png",)
    assert "notes.txt" not in " ".join(data.files) and "dog/broken.png" not in data.files
    assert [data.classes[i] for i in data.labels.tolist()] == [f.split("/")[0] for f in data.files]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "dog/broken.png" in warnings[0].getMessage() and "skipped 1 " in warnings[0].getMessage()


def test_pixel_modes_are_mapped_sensibly(mixed_dir: Path) -> None:
    data = load_images(mixed_dir, 4, 3)
    pixel = {f: data.images[i, :, 1, 1].tolist() for i, f in enumerate(data.files)}
    assert pixel["cat/clear.png"] == [0, 0, 0]  # transparent -> black
    assert pixel["dog/deep.png"] == [128, 128, 128]  # 16-bit 0x8080 -> 128
    assert pixel["cat/gray.png"] == [100, 100, 100]
    assert pixel["cat/rgb.png"] == [200, 10, 10]


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "data folder not found"),
        ("no_raw", "no 'raw/' folder"),
        ("no_classes", "no class folders"),
        ("empty_class", "with no images"),
        ("no_images", "with no images"),
        ("all_unreadable", "every image of class folder(s) b"),
    ],
)
def test_bad_folders_raise_data_error(tmp_path: Path, layout: str, message: str) -> None:
    root = tmp_path / "ds"
    good = Image.new("L", (4, 4), 7)
    if layout != "missing":
        root.mkdir()
    if layout in {"no_classes", "empty_class", "no_images", "all_unreadable"}:
        (root / "raw").mkdir()
    if layout == "empty_class":
        save(root / "raw" / "a" / "x.png", good)
        (root / "raw" / "b").mkdir()
    if layout == "no_images":
        (root / "raw" / "a").mkdir()
        (root / "raw" / "a" / "readme.md").write_text("x")
    if layout == "all_unreadable":
        save(root / "raw" / "a" / "x.png", good)
        (root / "raw" / "b").mkdir()
        (root / "raw" / "b" / "y.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_images(root, 8, 1)


def test_bad_channels_is_a_data_error(mixed_dir: Path) -> None:
    with pytest.raises(DataError, match=r"data\.channels"):
        load_images(mixed_dir, 8, 2)


# ---------------------------------------------------------------- cache


def test_second_load_is_fast_and_identical(digits_dir: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    first = load_images(digits_dir, 8, 1, cache_dir=cache_dir)
    assert first.images.shape == (1797, 1, 8, 8)
    assert len(list(cache_dir.glob("images_*.npy"))) == 1
    t0 = time.perf_counter()
    memo = load_images(digits_dir, 8, 1, cache_dir=cache_dir)
    memo_s = time.perf_counter() - t0
    assert memo is first
    clear_memory_cache()
    t0 = time.perf_counter()
    disk = load_images(digits_dir, 8, 1, cache_dir=cache_dir)
    disk_s = time.perf_counter() - t0
    assert torch.equal(disk.images, first.images) and torch.equal(disk.labels, first.labels)
    assert disk.files == first.files and disk.classes == first.classes
    assert memo_s < 0.5 and disk_s < 1.0, (memo_s, disk_s)


def test_changed_content_invalidates_the_cache(mixed_dir: Path) -> None:
    before = load_images(mixed_dir, 8, 1)
    assert len(list((mixed_dir / ".cache").glob("images_*.npy"))) == 1
    save(mixed_dir / "raw" / "cat" / "gray.png", Image.new("L", (20, 20), 220))
    after = load_images(mixed_dir, 8, 1)
    row = before.files.index("cat/gray.png")
    assert int(before.images[row].max()) == 100 and int(after.images[row].max()) == 220
    assert len(list((mixed_dir / ".cache").glob("images_*.npy"))) == 2
    other_size = load_images(mixed_dir, 6, 1)
    assert other_size.images.shape[-1] == 6


def test_workers_decode_the_same_as_in_process(mixed_dir: Path, tmp_path: Path) -> None:
    serial = load_images(mixed_dir, 8, 3, cache_dir=tmp_path / "a")
    clear_memory_cache()
    parallel = load_images(mixed_dir, 8, 3, cache_dir=tmp_path / "b", num_workers=2)
    assert torch.equal(serial.images, parallel.images) and parallel.skipped == serial.skipped


def test_corrupt_cache_file_is_rebuilt(mixed_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    first_images = load_images(mixed_dir, 8, 1).images.clone()  # the loaded images map the file
    (cache_file,) = (mixed_dir / ".cache").glob("images_*.npy")
    cache_file.write_bytes(b"truncated")
    clear_memory_cache()
    with caplog.at_level(logging.WARNING, logger="ml_framework.data"):
        again = load_images(mixed_dir, 8, 1)
    assert torch.equal(first_images, again.images)
    assert any("ignoring unreadable image cache" in r.getMessage() for r in caplog.records)
    assert cache_mod.FORMAT_VERSION >= 1


# ---------------------------------------------------------------- splits


def labels_of(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def test_splits_are_deterministic_per_seed() -> None:
    labels = labels_of([40, 25, 13, 7])
    kw = {"val_split": 0.2, "test_split": 0.1, "n_folds": 4}
    a, b = make_splits(labels, seed=1, **kw), make_splits(labels, seed=1, **kw)
    c = make_splits(labels, seed=2, **kw)
    assert a.fingerprint() == b.fingerprint() and all(
        np.array_equal(x, y) for x, y in zip(a.folds, b.folds, strict=True)
    )
    assert a.fingerprint() != c.fingerprint() and not np.array_equal(a.val, c.val)


@pytest.mark.parametrize(("val_split", "test_split"), [(0.15, 0.15), (0.2, 0.0), (0.0, 0.3), (0.01, 0.01)])
def test_splits_are_stratified_and_partition_the_data(val_split: float, test_split: float) -> None:
    counts = [60, 31, 9, 2, 1]
    labels = labels_of(counts)
    s = make_splits(labels, val_split=val_split, test_split=test_split, n_folds=0, seed=3)
    everything = np.concatenate([s.train, s.val, s.test])
    assert sorted(everything.tolist()) == list(range(len(labels)))
    for cls, n in enumerate(counts):
        n_val = int((labels[s.val] == cls).sum())
        n_test = int((labels[s.test] == cls).sum())
        assert (labels[s.train] == cls).sum() >= 1
        if val_split > 0 and n >= 2:
            assert n_val >= 1
        if n >= 9:
            assert abs(n_val - n * val_split) <= 1 and abs(n_test - n * test_split) <= 1


@pytest.mark.parametrize("stratified", [True, False], ids=["stratified", "plain"])
def test_folds_are_disjoint_and_cover_train_val(stratified: bool) -> None:
    labels = labels_of([50, 23, 11, 7])
    s = make_splits(labels, val_split=0.15, test_split=0.15, n_folds=5, seed=0, stratified_folds=stratified)
    assert s.n_folds == 5
    joined = np.concatenate(s.folds)
    assert len(joined) == len(set(joined.tolist()))
    assert sorted(joined.tolist()) == sorted(np.concatenate([s.train, s.val]).tolist())
    assert not set(joined.tolist()) & set(s.test.tolist())
    sizes = [len(f) for f in s.folds]
    assert max(sizes) - min(sizes) <= 1
    if stratified:
        for fold in s.folds:
            assert set(labels[fold].tolist()) == {0, 1, 2, 3}
    train, val, test = s.for_fold(2)
    assert np.array_equal(val, s.folds[2]) and np.array_equal(test, s.test)
    assert sorted(np.concatenate([train, val]).tolist()) == sorted(joined.tolist())
    fixed = s.for_fold(None)
    assert np.array_equal(fixed[0], s.train) and np.array_equal(fixed[1], s.val)


def test_plain_folds_ignore_classes_and_keep_the_fixed_split() -> None:
    labels = labels_of([30, 4])  # class 1 has 3 train+val images: too few for 5 stratified folds
    kw = {"val_split": 0.1, "test_split": 0.25, "n_folds": 5, "seed": 0}
    plain = make_splits(labels, stratified_folds=False, **kw)
    assert [len(f) for f in plain.folds] == [5, 5, 5, 5, 5]
    assert sum(1 in labels[f] for f in plain.folds) <= 3  # some fold has no image of class 1
    stratified = make_splits(labels_of([30, 9]), **kw)
    again = make_splits(labels_of([30, 9]), stratified_folds=False, **kw)
    assert np.array_equal(stratified.val, again.val) and np.array_equal(stratified.test, again.test)
    assert stratified.fingerprint() != again.fingerprint()
    with pytest.raises(DataError, match=r"n_folds=5 is larger than the 2 train\+val"):
        make_splits(
            labels_of([2, 2]), val_split=0.0, test_split=0.25, n_folds=5, seed=0, stratified_folds=False
        )


def test_fold_errors() -> None:
    labels = labels_of([30, 4])
    with pytest.raises(DataError, match=r"n_folds=5 .*class 1's 3 .* <= 3"):
        make_splits(labels, val_split=0.1, test_split=0.25, n_folds=5, seed=0)
    with pytest.raises(DataError, match="class 'dog'"):
        make_splits(labels, val_split=0.1, test_split=0.25, n_folds=5, seed=0, class_names=["cat", "dog"])
    s = make_splits(labels, val_split=0.1, test_split=0.0, n_folds=3, seed=0)
    with pytest.raises(ConfigError, match=r"0\.\.2"):
        s.for_fold(3)
    with pytest.raises(ConfigError, match="n_folds"):
        make_splits(labels, val_split=0.1, test_split=0.0, n_folds=0, seed=0).for_fold(0)
    with pytest.raises(ConfigError, match="val_split"):
        make_splits(labels, val_split=0.6, test_split=0.5, n_folds=0, seed=0)


def test_splits_to_json_names_files() -> None:
    labels = labels_of([6, 6])
    files = [f"{c}/{i}.png" for c, i in zip(labels, range(12), strict=True)]
    s = make_splits(labels, val_split=0.2, test_split=0.2, n_folds=2, seed=0)
    doc = s.to_json(files)
    assert doc["counts"] == {"train": len(s.train), "val": len(s.val), "test": len(s.test)}
    assert sorted(doc["train"] + doc["val"] + doc["test"]) == sorted(files)
    assert doc["fingerprint"] == s.fingerprint() and len(doc["folds"]) == 2
    assert s.to_json(files, fold=1)["val"] == doc["folds"][1]


# ---------------------------------------------------------------- batches


@pytest.mark.parametrize("batch_size", range(1, 71))
def test_remainder_is_merged_for_every_batch_size(batch_size: int) -> None:
    bounds = batch_bounds(67, batch_size, merge_small_remainder=True)
    assert bounds[0][0] == 0 and bounds[-1][1] == 67
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert min(end - start for start, end in bounds) >= MIN_TRAIN_BATCH
    assert max(end - start for start, end in bounds) <= max(batch_size, MIN_TRAIN_BATCH) + MIN_TRAIN_BATCH - 1
    evaluation = batch_bounds(67, batch_size, merge_small_remainder=False)
    assert [e - s for s, e in evaluation][:-1] == [batch_size] * (len(evaluation) - 1)


def test_tiny_datasets_give_one_batch() -> None:
    assert batch_bounds(2, 64, True) == [(0, 2)]
    assert batch_bounds(0, 64, True) == []


def numbered_images(n: int = 20, c: int = 2, size: int = 6) -> torch.Tensor:
    """Each image holds distinct values, so a shifted/flipped copy is recognisable."""
    base = torch.arange(c * size * size).view(1, c, size, size)
    return ((base + 7 * torch.arange(n).view(n, 1, 1, 1)) % 200 + 30).to(torch.uint8)


def collect(batches: TensorBatches, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    batches.set_epoch(epoch)
    xs, ys = zip(*batches, strict=True)
    return torch.cat(xs), torch.cat(ys)


AUG = {"random_crop": True, "crop_padding": 2, "horizontal_flip": True, "vertical_flip": True}


def make_batches(images: torch.Tensor, seed: int = 0, **kwargs: object) -> TensorBatches:
    labels = torch.arange(len(images))
    options = {"batch_size": 8, "shuffle": True, "seed": seed, "augmentation": AUG, **kwargs}
    return TensorBatches(images, labels, **options)


def test_every_sample_once_per_epoch_and_deterministic_per_seed_and_epoch() -> None:
    images = numbered_images(43)
    rng_before = torch.get_rng_state()
    a = make_batches(images)
    assert len(a) == len(list(a)) == 6  # 43 = 8 * 5 + 3, and 3 is a batch of its own
    x1, y1 = collect(a, 1)
    assert sorted(y1.tolist()) == list(range(43))
    x1b, y1b = collect(make_batches(images), 1)  # a fresh loader, as after a resume
    assert torch.equal(x1, x1b) and torch.equal(y1, y1b)
    x2, y2 = collect(a, 2)
    assert not torch.equal(y1, y2)  # another order
    assert not torch.equal(x1[torch.argsort(y1)], x2[torch.argsort(y2)])  # other crops/flips
    assert not torch.equal(y1, collect(make_batches(images, seed=5), 1)[1])
    assert torch.equal(rng_before, torch.get_rng_state())


def reference_view(image: torch.Tensor, pad: int, mode: str) -> torch.Tensor:
    padded = torch.nn.functional.pad(image.float()[None], (pad,) * 4, mode=mode)[0]
    return padded


@pytest.mark.parametrize(
    ("mode", "torch_mode"), [("zeros", "constant"), ("reflect", "reflect"), ("replicate", "replicate")]
)
def test_crop_and_flips_match_a_per_sample_reference(mode: str, torch_mode: str) -> None:
    images = numbered_images(30)
    aug = {**AUG, "padding_mode": mode}
    x, y = collect(make_batches(images, augmentation=aug), 0)
    assert x.shape == (30, 2, 6, 6) and x.dtype == torch.float32
    shifted = 0
    for out, label in zip(x * 255, y.tolist(), strict=True):
        padded = reference_view(images[label], 2, torch_mode)
        candidates = []
        for dy in range(5):
            for dx in range(5):
                crop = padded[:, dy : dy + 6, dx : dx + 6]
                candidates += [(dy, dx, v) for v in (crop, crop.flip(1), crop.flip(2), crop.flip(1).flip(2))]
        match = [(dy, dx) for dy, dx, v in candidates if torch.allclose(v, out, atol=1e-3)]
        assert match, f"sample {label} is not a crop/flip of its image"
        shifted += (2, 2) not in match
    assert shifted >= 10  # crop moves content for most samples


def test_flip_only_and_eval_loaders() -> None:
    images = numbered_images(16)
    x, y = collect(make_batches(images, augmentation={"horizontal_flip": True}), 0)
    originals = images[y].float() / 255
    flipped = torch.isclose(x, originals.flip(3)).flatten(1).all(1)
    same = torch.isclose(x, originals).flatten(1).all(1)
    assert bool((flipped | same).all()) and 0 < int(flipped.sum()) < 16
    ev = TensorBatches(images, torch.arange(16), batch_size=5, shuffle=False, seed=0, augmentation=AUG)
    xe, ye = collect(ev, 0)
    assert [len(b[1]) for b in ev] == [5, 5, 5, 1]
    assert torch.equal(ye, torch.arange(16)) and torch.allclose(xe, images.float() / 255)


def test_normalisation_and_channels_last() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 5, 5), generator=g, dtype=torch.uint8)
    images[:, 2] = 9  # a constant channel must not divide by zero
    mean, std = compute_mean_std(images)
    direct = images.double() / 255
    assert torch.allclose(mean.double(), direct.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(std[:2].double(), direct.std(dim=(0, 2, 3), unbiased=False)[:2], atol=1e-6)
    assert std[2] == 1.0
    tb = TensorBatches(
        images, torch.zeros(64), batch_size=16, shuffle=False, seed=0, mean=mean, std=std, channels_last=True
    )
    x, _ = collect(tb, 0)
    assert torch.allclose(x.mean(dim=(0, 2, 3))[:2], torch.zeros(2), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3), unbiased=False)[:2], torch.ones(2), atol=1e-4)
    assert next(iter(tb))[0].is_contiguous(memory_format=torch.channels_last)
    off = TensorBatches(
        images,
        torch.zeros(64),
        batch_size=64,
        shuffle=False,
        seed=0,
        mean=mean,
        std=std,
        augmentation={"normalize": False},
    )
    assert torch.allclose(next(iter(off))[0], images.float() / 255)


def test_bad_augmentation_settings() -> None:
    images = numbered_images(4)
    with pytest.raises(ConfigError, match="reflect"):
        make_batches(images, augmentation={**AUG, "padding_mode": "reflct"})
    with pytest.raises(ConfigError, match="smaller than the image size"):
        make_batches(images, augmentation={**AUG, "crop_padding": 6, "padding_mode": "reflect"})


def test_channel_statistics_hold_a_few_images_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large images are converted to float in chunks of STATS_CHUNK_BYTES: a chunk smaller than one
    image's float copy still gives the statistics of the whole set."""
    from ml_framework.data import loader

    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (10, 3, 16, 16), generator=g, dtype=torch.uint8)
    whole = compute_mean_std(images, indices=np.arange(1, 9))
    monkeypatch.setattr(loader, "STATS_CHUNK_BYTES", 3 * 16 * 16 * 8 * 3)  # 3 images per chunk
    chunked = compute_mean_std(images, indices=np.arange(1, 9))
    assert all(torch.allclose(a, b) for a, b in zip(whole, chunked, strict=True))
    direct = images[1:9].double() / 255
    assert torch.allclose(chunked[0].double(), direct.mean(dim=(0, 2, 3)), atol=1e-6)
