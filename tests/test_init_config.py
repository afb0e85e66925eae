"""ml-init-config: dataset inspection, config generation and the CLI (flags, errors, prompts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from ml_framework.cli.init_config import main
from ml_framework.config import is_known_key, load_config
from ml_framework.data.inspect import inspect_dataset
from ml_framework.errors import DataError
from ml_framework.initconfig.generate import (
    Choices,
    batch_size_choices,
    generate_config,
    pruner_warmup,
    resolve,
    suggest_image_size,
)

REPO = Path(__file__).resolve().parents[1]

# (width, height, PIL mode, extension) per image
Spec = tuple[int, int, str, str]


def make_folder(root: Path, classes: dict[str, list[Spec]]) -> Path:
    """DATA_DIR/raw/<class>/<i>.<ext> with solid-colour images of the given sizes and modes."""
    for name, specs in classes.items():
        folder = root / "raw" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, (w, h, mode, ext) in enumerate(specs):
            colour = (i * 40) % 256 if mode == "L" else ((i * 40) % 256, 80, 160)
            Image.new(mode, (w, h), colour).save(folder / f"{i}.{ext}")
    return root


def digits_like(root: Path, per_class: int = 20, n_classes: int = 3) -> Path:
    return make_folder(root, {str(d): [(8, 8, "L", "png")] * per_class for d in range(n_classes)})


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """RGB + grayscale, PNG/JPEG/BMP of mixed sizes, one corrupt file, one empty class, 4:1 imbalance."""
    root = make_folder(
        tmp_path / "pets",
        {
            "cat": [
                (40, 30, "RGB", "jpg"),
                (64, 64, "RGB", "png"),
                (100, 80, "RGB", "bmp"),
                (64, 48, "L", "png"),
            ],
            "dog": [(64, 64, "RGB", "jpg")],
        },
    )
    (root / "raw" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "raw" / "dog" / "notes.txt").write_text("ignored: not an image")
    (root / "raw" / "bird").mkdir()
    return root


# ------------------------------------------------------------------------------------ inspection


def test_inspection_of_mixed_folder(mixed: Path) -> None:
    r = inspect_dataset(mixed)
    assert r.name == "pets"
    assert r.classes == ("cat", "dog")
    assert r.counts == {"cat": 4, "dog": 1}
    assert r.empty_classes == ("bird",)
    assert [u.path for u in r.unreadable] == ["dog/broken.jpg"]
    assert (r.min_size, r.median_size, r.max_size) == ((40, 30), (64, 64), (100, 80))
    assert r.channel_kind == "mixed" and r.channels == 3
    assert r.formats == {"PNG": 2, "JPEG": 2, "BMP": 1}
    assert r.imbalance == 4.0


@pytest.mark.parametrize(
    ("modes", "kind", "channels"),
    [
        (["L", "L"], "grayscale", 1),
        (["RGB", "RGBA"], "RGB", 3),
        (["L", "RGB"], "mixed", 3),
        (["P", "RGB"], "RGB", 3),
    ],
)
def test_channel_kinds(tmp_path: Path, modes: list[str], kind: str, channels: int) -> None:
    root = make_folder(
        tmp_path / "ds", {c: [(16, 16, m, "png")] * 2 for c, m in zip("ab", modes, strict=True)}
    )
    r = inspect_dataset(root)
    assert (r.channel_kind, r.channels) == (kind, channels)


def test_truncated_image_is_unreadable(tmp_path: Path) -> None:
    root = make_folder(
        tmp_path / "ds", {"a": [(32, 32, "RGB", "jpg")] * 2, "b": [(32, 32, "RGB", "jpg")] * 2}
    )
    victim = root / "raw" / "b" / "1.jpg"
    victim.write_bytes(victim.read_bytes()[:200])  # a valid header, no image data
    r = inspect_dataset(root)
    assert [u.path for u in r.unreadable] == ["b/1.jpg"]
    assert r.counts == {"a": 2, "b": 1}


def _only_txt(root: Path) -> None:
    for c in ("a", "b"):
        (root / "raw" / c).mkdir(parents=True)
        (root / "raw" / c / "readme.txt").write_text("x")


def _one_class(root: Path) -> None:
    digits_like(root, per_class=3, n_classes=1)
    (root / "raw" / "empty").mkdir()


def _all_corrupt(root: Path) -> None:
    for c in ("a", "b"):
        (root / "raw" / c).mkdir(parents=True)
        (root / "raw" / c / "x.png").write_bytes(b"not a png")


ERROR_CASES = {
    "missing dir": (lambda root: None, "data folder not found"),
    "no raw": (lambda root: root.mkdir(), "no 'raw/' folder"),
    "no images": (_only_txt, "no image files"),
    "one class": (_one_class, "at least two"),
    "all unreadable": (_all_corrupt, "no readable images"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_folders_exit_2_and_write_nothing(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = ERROR_CASES[case]
    root = tmp_path / "ds"
    make(root)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=message):
        inspect_dataset(root)
    assert main([str(root), "--yes", "--optuna"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Expected layout" in err
    assert not (tmp_path / "configs").exists()


# ------------------------------------------------------------------------------------ generation


@pytest.mark.parametrize(
    ("side", "architecture", "expected"),
    [(8, "simple_cnn", 16), (28, "simple_cnn", 32), (50, "simple_cnn", 48), (300, "simple_cnn", 64),
     (300, "mlp", 32), (300, "resnet18", 224), (100, "resnet18", 96)],
)  # fmt: skip
def test_image_size_suggestion(tmp_path: Path, side: int, architecture: str, expected: int) -> None:
    root = make_folder(tmp_path / "ds", {c: [(side, side, "L", "png")] * 2 for c in "ab"})
    assert suggest_image_size(inspect_dataset(root), architecture) == expected


def test_digits_config_loads_and_suits_the_data(tmp_path: Path) -> None:
    root = digits_like(tmp_path / "digits", per_class=100, n_classes=10)
    report = inspect_dataset(root)
    generated = generate_config(report, Choices(data_dir="data/digits", optuna=True))
    path = tmp_path / "digits_config.yaml"
    path.write_text(generated.text)
    assert yaml.safe_load(generated.text) == generated.mapping  # text and mapping agree, floats stay floats
    cfg = load_config(path)
    assert (cfg.data.dataset_name, cfg.data.data_dir, cfg.data.channels) == ("digits", "data/digits", 1)
    assert cfg.data.image_size == 16 and cfg.model.num_classes == 10
    assert cfg.data.class_names == [str(d) for d in range(10)]
    assert cfg.data.augmentation.horizontal_flip is False and cfg.data.augmentation.random_crop is True
    search = cfg.search
    assert search.study_name == "digits_optimization" and search.metric == "val_acc"
    assert search.storage == "sqlite:///runs/optuna_studies/optuna.db"
    assert 0 < search.pruner.n_warmup_steps < cfg.training.num_epochs
    space = generated.mapping["search"]["search_space"]
    assert all(is_known_key(k) for k in space)
    assert space["optimizer.momentum"]["condition"] == {"parameter": "optimizer.name", "value": "sgd"}
    assert all(
        isinstance(space[k][b], float)
        for k in ("optimizer.lr", "optimizer.weight_decay")
        for b in ("low", "high")
    )
    train_images = round(1000 * 0.7)
    assert all(train_images // b >= 10 for b in space["training.batch_size"]["choices"])
    assert "# Data:" in generated.text and "# Hyperparameter search" in generated.text


def test_search_space_is_accepted_by_the_search_parser(tmp_path: Path) -> None:
    from ml_framework.search.space import effect_warnings, parse_search_space, validate_search_space

    path = tmp_path / "c.yaml"
    report = inspect_dataset(digits_like(tmp_path / "digits"))
    path.write_text(generate_config(report, Choices(data_dir="digits", optuna=True)).text)
    cfg = load_config(path)
    space = parse_search_space(cfg.search.search_space)
    validate_search_space(space, cfg)
    assert effect_warnings(space, cfg) == []


@pytest.mark.parametrize(
    ("classes", "dataset", "flip"),
    [(["0", "1"], "numbers", False), (["a", "B"], "ds", False), (["digit_3", "digit_4"], "ds", False),
     (["cat", "dog"], "pets", True), (["cat", "dog"], "mnist_fashion", False),
     (["bark", "stone"], "textures", True)],
)  # fmt: skip
def test_horizontal_flip_only_for_natural_images(
    tmp_path: Path, classes: list[str], dataset: str, flip: bool
) -> None:
    report = inspect_dataset(
        make_folder(tmp_path / dataset, {c: [(16, 16, "RGB", "png")] * 2 for c in classes})
    )
    assert resolve(report, Choices(data_dir=dataset)).horizontal_flip is flip
    asked = resolve(report, Choices(data_dir=dataset, horizontal_flip=True))
    assert asked.horizontal_flip is True


@pytest.mark.parametrize("epochs", [1, 2, 3, 10, 15, 30])
def test_pruner_warmup_is_below_epochs(epochs: int) -> None:
    assert 0 <= pruner_warmup(epochs) < epochs


def test_sizes_follow_dataset_size(tmp_path: Path) -> None:
    small = inspect_dataset(digits_like(tmp_path / "small", per_class=10, n_classes=2))
    big = inspect_dataset(digits_like(tmp_path / "big", per_class=200, n_classes=10))
    s, b = resolve(small, Choices(data_dir="s")), resolve(big, Choices(data_dir="b"))
    assert (s.batch_size, s.num_epochs, b.batch_size, b.num_epochs) == (8, 30, 32, 15)
    assert batch_size_choices(small, 8, 16) == [8]  # 14 training images: no larger batch keeps 10 steps
    assert batch_size_choices(big, 32, 16) == [16, 32, 64]


def test_other_architecture_gets_no_builtin_keys(tmp_path: Path) -> None:
    report = inspect_dataset(digits_like(tmp_path / "digits"))
    mapping = generate_config(report, Choices(data_dir="d", architecture="resnet18", optuna=True)).mapping
    assert "width" not in mapping["model"] and mapping["model"]["pretrained"] is False
    assert [k for k in mapping["search"]["search_space"] if k.startswith("model.")] == ["model.dropout"]


@pytest.mark.slow  # imports torchvision and timm for the suggestions
def test_cli_rejects_unknown_architecture(
    mixed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c.yaml"
    assert main([str(mixed), "--yes", "--architecture", "resnet81", "--output", str(out)]) == 2
    assert "resnet18" in capsys.readouterr().err  # the suggestion
    assert not out.exists()


# ------------------------------------------------------------------------------------ CLI


def test_cli_writes_default_path_and_respects_force(
    mixed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert (
        main([str(mixed), "--optuna", "--yes", "--num-epochs", "6", "--batch-size", "4", "--device", "cpu"])
        == 0
    )
    out = capsys.readouterr().out
    path = Path("configs/pets_config.yaml")
    assert "ml-train --config configs/pets_config.yaml" in out
    assert "ml-search --config configs/pets_config.yaml --n-trials" in out
    assert "dog/broken.jpg" in out and "bird" in out
    cfg = load_config(path)
    assert (cfg.training.num_epochs, cfg.training.batch_size, cfg.training.device) == (6, 4, "cpu")
    assert cfg.data.class_names == ["cat", "dog"] and cfg.data.channels == 3
    assert cfg.data.augmentation.horizontal_flip is True
    assert cfg.search.pruner.n_warmup_steps < 6

    path.write_text("# mine\n")
    assert main([str(mixed), "--yes"]) == 2
    err = capsys.readouterr().err
    assert "configs/pets_config.yaml" in err and "--force" in err
    assert path.read_text() == "# mine\n"
    assert main([str(mixed), "--yes", "--force", "--image-size", "40"]) == 0
    assert load_config(path).data.image_size == 40 and load_config(path).search is None


def test_cli_rejects_bad_device(mixed: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.yaml"
    assert main([str(mixed), "--yes", "--device", "gpu", "--output", str(out)]) == 2
    assert not out.exists()


def _cli(args: list[str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ml_framework.cli.init_config", *args],
        input=stdin, capture_output=True, text=True, cwd=cwd, timeout=60, check=False,
    )  # fmt: skip


def test_interactive_answers_from_stdin(tmp_path: Path) -> None:
    root = digits_like(tmp_path / "digits")
    out = tmp_path / "answered.yaml"
    # architecture, image size, batch size, epochs, hflip, search block
    answers = "mlp\n24\n8\n7\ny\ny\n"
    proc = _cli([str(root), "--output", str(out)], tmp_path, answers)
    assert proc.returncode == 0, proc.stderr
    assert "(16)" in proc.stdout  # the detected image size is shown as the default
    cfg = load_config(out)
    assert cfg.model.architecture == "mlp" and cfg.data.image_size == 24
    assert (cfg.training.batch_size, cfg.training.num_epochs) == (8, 7)
    assert cfg.data.augmentation.horizontal_flip is True
    assert cfg.search is not None and cfg.search.pruner.n_warmup_steps < 7


def test_interactive_defaults_and_eof(tmp_path: Path) -> None:
    root = digits_like(tmp_path / "digits")
    out = tmp_path / "defaults.yaml"
    proc = _cli([str(root), "--output", str(out)], tmp_path, "\n" * 6)
    assert proc.returncode == 0, proc.stderr
    assert load_config(out).data.image_size == 16 and load_config(out).search is None
    proc = _cli([str(root), "--output", str(tmp_path / "eof.yaml")], tmp_path, "")
    assert proc.returncode == 2 and "--yes" in proc.stderr
    assert not (tmp_path / "eof.yaml").exists()


def test_help_does_not_import_torch() -> None:
    code = "import sys; from ml_framework.cli.init_config import build_parser; build_parser().format_help(); "
    code += "assert not {'torch', 'optuna', 'torchvision', 'timm'} & set(sys.modules), sys.modules.keys()"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


@pytest.mark.slow
def test_generated_config_trains_with_ml_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: the written config runs as is; an empty class folder stops training as warned."""
    from ml_framework.cli.train import main as train_main

    root = make_folder(
        tmp_path / "shapes", {c: [(20 + i, 24, "RGB", "png") for i in range(12)] for c in "ab"}
    )
    (root / "raw" / "b" / "corrupt.png").write_bytes(b"\x89PNG garbage")
    (root / "raw" / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main([str(root), "--yes", "--optuna"]) == 0
    train = ["--config", "configs/shapes_config.yaml", "--num_epochs", "1", "--device", "cpu"]
    assert train_main(train) == 2  # the empty folder, as the inspection warned
    (root / "raw" / "empty").rmdir()
    assert train_main(train) == 0
    assert len(list((tmp_path / "runs").glob("shapes_simple_cnn_*/metrics.json"))) == 1
