"""Turn a dataset inspection into a ready training config (and an optional Optuna search block).

Pure: `DatasetReport` + `Choices` -> a config mapping and its commented YAML text. The rules that pick
each value live in small tables below so that they can be read and tested on their own.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from ml_framework.data.inspect import DatasetReport, format_size
from ml_framework.search.storage import default_storage_url

DEFAULT_ARCHITECTURE = "simple_cnn"
RUNS_DIR = "runs"
VAL_SPLIT = 0.15
TEST_SPLIT = 0.15
SEED = 42

# Image sizes a resize lands on; the suggestion is the nearest one to the median short side.
FRIENDLY_SIZES = (16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)
# Below 16 px the CNN has nothing left to pool: 8x8 digits train better upscaled to 16.
MIN_IMAGE_SIZE = 16
# Largest suggested size per architecture (CPU-friendly for the built-ins); others use the default.
IMAGE_SIZE_CAP: dict[str, int] = {"simple_cnn": 64, "mlp": 32}
DEFAULT_IMAGE_SIZE_CAP = 224

# Batch sizes: powers of two, about TARGET_BATCHES_PER_EPOCH steps per epoch, capped by image size.
BATCH_SIZES = (8, 16, 32, 64, 128, 256)
TARGET_BATCHES_PER_EPOCH = 25
MIN_BATCHES_PER_EPOCH = 10  # searched batch sizes keep at least this many steps per epoch
BATCH_CAP_BY_IMAGE_SIZE = ((64, 128), (128, 64), (math.inf, 32))  # (image size up to, largest batch)

# Epochs: enough for about TARGET_STEPS optimizer steps, rounded to 5, within EPOCH_RANGE.
TARGET_STEPS = 600
EPOCH_RANGE = (10, 30)

# Built-in model settings and the parts of them worth searching; other architectures get none.
BUILTIN_MODELS: dict[str, dict[str, Any]] = {
    "simple_cnn": {"width": 32, "width_choices": [16, 32, 64], "depth_range": (1, 3)},
    "mlp": {"width": 256, "width_choices": [128, 256, 512], "depth_range": (1, 3)},
}
DROPOUT = 0.2

# Text-like classes (digits, letters) must not be mirrored: a flipped 3 or b is another symbol.
TEXT_LIKE_CLASS = re.compile(r"^(?:(?:digit|num|number|letter|char|character)[ _-]?)?(?:[0-9]+|[a-z])$", re.I)
# fmt: off
TEXT_LIKE_DATASET_WORDS = frozenset({
    "digit", "digits", "mnist", "emnist", "kmnist", "letter", "letters", "char", "chars", "characters",
    "ocr", "text", "handwriting", "handwritten", "svhn", "alphabet", "glyphs",
})
# fmt: on

N_TRIALS = 20

# Transfer learning for photo-like data: pretrained backbones, in order of preference, and the input
# size that trains in minutes on the device (ImageNet weights expect 224; CPUs get 128-160 px).
TRANSFER_BACKBONES = ("resnet18", "mobilenet_v3_large", "mobilenet_v3_small")
TRANSFER_SIZE_CUDA = 224
TRANSFER_SIZES_CPU = (128, 160)
PHOTO_MIN_SIDE = 64  # smaller images (icons, digits) are not what ImageNet backbones were trained on
BACKBONE_LR_MULT = 0.1
RESIZE_RATIO = 256 / 224  # torchvision presets: resize to 256, crop 224
DECODE_WORKERS_MAX = 4

SECTION_COMMENTS: dict[str, str] = {
    "data": "Data: where the images are (<data_dir>/raw/<class>/<image>) and how they are prepared.",
    "data.augmentation": "Random changes to training images only (validation and test images are not "
    "augmented).",
    "model": "Model: simple_cnn and mlp are built in; torchvision names (resnet18) and timm/<name> work too.",
    "training": "Training loop: epochs, batch size, device, seed, and the metric that picks the best "
    "checkpoint.",
    "training.early_stopping": "Stop when `monitor` has not improved for `patience` epochs.",
    "optimizer": "Optimizer: sgd, adam, adamw or rmsprop (momentum is used by sgd/rmsprop only).",
    "scheduler": "Learning-rate schedule over the epochs: none, step, cosine, plateau, warmup_cosine.",
    "output": "Outputs: each run writes <runs_dir>/<name>/ (checkpoints, metrics.json, TensorBoard logs).",
    "search": "Hyperparameter search, used by ml-search: each trial trains this config with sampled values.",
    "search.sampler": "How trials pick values: TPE models good and bad trials after the random start-up "
    "trials.",
    "search.pruner": "Stops a trial whose val_acc falls below the median of completed trials at the same "
    "epoch, from epoch n_warmup_steps on; the first n_startup_trials always finish.",
    "search.search_space": "Config keys to vary and their ranges (loguniform/uniform/int/categorical); "
    "`condition` samples a key only when another key has the given value.",
}

KEY_COMMENTS: dict[str, str] = {
    "data.dataset_name": "names runs and the search study",
    "data.channels": "1 = grayscale, 3 = RGB; images are converted",
    "data.class_names": "must match the class folders",
    "data.val_split": "fraction held out to pick the best epoch",
    "data.test_split": "fraction held out for the final test score",
    "data.augmentation.random_crop": "pad by crop_padding pixels, crop back at a random offset",
    "data.augmentation.normalize": "per-channel mean/std of the training split",
    "model.num_classes": "one output per class folder",
    "model.dropout": "dropout before the classifier",
    "model.width": "channels of the first conv block (hidden units for mlp)",
    "model.depth": "conv blocks (hidden layers for mlp)",
    "training.device": "auto = CUDA when available, else CPU",
    "training.seed": "same seed + same config = same run",
    "training.monitor": "metric that selects checkpoints/best.pt",
    "optimizer.lr": "learning rate",
    "optimizer.weight_decay": "decoupled for adamw, L2 for sgd",
    "scheduler.min_lr": "learning rate reached at the last epoch",
    "output.name": "null = <dataset>_<architecture>_<timestamp>",
    "search.storage": "SQLite file under runs/; a postgresql:// URL lets several machines share a study",
    "search.n_trials": "ml-search --n-trials overrides this",
    "search.keep_checkpoints": "best, all or none: which trials keep their checkpoints",
}


@dataclass(frozen=True)
class Choices:
    """What the user decided (flags or prompts); None = use the suggestion for this dataset."""

    data_dir: str
    architecture: str | None = None  # None: simple_cnn, or a pretrained backbone (see `transfer`)
    image_size: int | None = None
    num_epochs: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    horizontal_flip: bool | None = None
    optuna: bool = False
    n_trials: int = N_TRIALS
    pretrained: bool | None = None  # None: when the data is photo-like and a backbone's weights are cached
    # Facts about this machine (the CLI fills them; the rules here stay pure):
    cached_backbones: tuple[str, ...] = ()  # TRANSFER_BACKBONES whose weights are in the local cache
    cuda: bool = False  # training.device resolves to a CUDA device
    memory_budget_mb: int | None = None  # data.pipeline auto's default budget here; None: unknown
    cpus: int = 1


@dataclass(frozen=True)
class GeneratedConfig:
    mapping: dict[str, Any]
    text: str  # the YAML file, with comments
    notes: dict[str, str] = field(default_factory=dict)  # dotted key -> why this value was chosen


# ------------------------------------------------------------------------------------ suggestions


def train_size(report: DatasetReport) -> int:
    """Images left for training after the validation and test splits."""
    return max(1, round(report.num_images * (1 - VAL_SPLIT - TEST_SPLIT)))


def _image_size_and_reason(report: DatasetReport, architecture: str) -> tuple[int, str]:
    side = max(1, report.median_side)
    nearest = min(FRIENDLY_SIZES, key=lambda s: abs(math.log(s / side)))
    cap = IMAGE_SIZE_CAP.get(architecture, DEFAULT_IMAGE_SIZE_CAP)
    size = max(MIN_IMAGE_SIZE, min(cap, nearest))
    if nearest > cap:
        reason = f"capped at {cap} for {architecture} (--image-size to change)"
    elif side < MIN_IMAGE_SIZE:
        reason = f"upscaled: small inputs leave {architecture} too little to work with"
    else:
        reason = "nearest common size"
    return size, f"median image {format_size(report.median_size)}; {reason}"


def suggest_image_size(report: DatasetReport, architecture: str = DEFAULT_ARCHITECTURE) -> int:
    """The friendly size nearest the median short side, at least 16, at most the architecture's cap."""
    return _image_size_and_reason(report, architecture)[0]


def _batch_cap(image_size: int) -> int:
    return next(cap for limit, cap in BATCH_CAP_BY_IMAGE_SIZE if image_size <= limit)


def suggest_batch_size(report: DatasetReport, image_size: int) -> int:
    """Largest power of two giving about TARGET_BATCHES_PER_EPOCH steps per epoch."""
    fitting = [b for b in BATCH_SIZES if train_size(report) / b >= TARGET_BATCHES_PER_EPOCH]
    return min(_batch_cap(image_size), max(fitting, default=BATCH_SIZES[0]))


def suggest_num_epochs(report: DatasetReport, batch_size: int) -> int:
    """Epochs for about TARGET_STEPS optimizer steps (small datasets need more passes)."""
    steps_per_epoch = math.ceil(train_size(report) / batch_size)
    epochs = 5 * round(TARGET_STEPS / steps_per_epoch / 5)
    return max(EPOCH_RANGE[0], min(EPOCH_RANGE[1], epochs))


def is_text_like(report: DatasetReport) -> bool:
    """Digits, letters or characters: mirrored images would change their meaning."""
    if TEXT_LIKE_DATASET_WORDS & set(re.split(r"[^a-z0-9]+", report.name.lower())):
        return True
    return all(TEXT_LIKE_CLASS.match(c) for c in report.classes)


def is_photo_like(report: DatasetReport) -> bool:
    """Colour images of a useful size that are not digits/letters: what ImageNet backbones know."""
    return report.channels == 3 and report.median_side >= PHOTO_MIN_SIDE and not is_text_like(report)


def transfer(report: DatasetReport, c: Choices) -> bool:
    """Fine-tune a pretrained backbone? --pretrained/--no-pretrained decide; otherwise yes for photo-like
    data when a suitable backbone's weights are already in the local cache (nothing to download)."""
    if c.pretrained is not None:
        return c.pretrained
    if not is_photo_like(report) or not c.cached_backbones:
        return False
    return c.architecture is None or c.architecture in c.cached_backbones


def _transfer_image_size(report: DatasetReport, c: Choices) -> tuple[int, str]:
    if c.cuda:
        return TRANSFER_SIZE_CUDA, f"{TRANSFER_SIZE_CUDA} px, the pretrained weights' own size (CUDA)"
    small, large = TRANSFER_SIZES_CPU
    size = large if report.median_side >= large else small
    return size, f"{size} px: fine-tuning on a CPU trains in minutes at {small}-{large} px (224 on CUDA)"


def resolve(report: DatasetReport, choices: Choices) -> Choices:
    """Fill every open choice with the suggestion for this dataset (in dependency order)."""
    pretrained = transfer(report, choices)
    architecture = choices.architecture or (
        next(iter(choices.cached_backbones), TRANSFER_BACKBONES[0]) if pretrained else DEFAULT_ARCHITECTURE
    )
    choices = replace(choices, architecture=architecture, pretrained=pretrained)
    if pretrained and not choices.image_size:
        choices = replace(choices, image_size=_transfer_image_size(report, choices)[0])
    image_size = choices.image_size or suggest_image_size(report, choices.architecture)
    batch_size = choices.batch_size or suggest_batch_size(report, image_size)
    num_epochs = choices.num_epochs or suggest_num_epochs(report, batch_size)
    flip = (not is_text_like(report)) if choices.horizontal_flip is None else choices.horizontal_flip
    return replace(
        choices, image_size=image_size, batch_size=batch_size, num_epochs=num_epochs, horizontal_flip=flip
    )


PRUNER_STARTUP_TRIALS = 3  # trials that always run to the end, the median's first reference


def pruner_warmup(num_epochs: int) -> int:
    """The epoch at which pruning may start: an eighth of the run, at least the first epoch, always
    below num_epochs so pruning can act. On the bundled digits (20 trials x 8 epochs) this default
    trains about half the epochs of an unpruned search for the same best value
    (benchmarks/pruning_savings.py); later warm-ups saved only 20-35%."""
    return max(0, min(num_epochs - 1, max(1, num_epochs // 8)))


def batch_size_choices(report: DatasetReport, batch_size: int, image_size: int) -> list[int]:
    """Powers of two around `batch_size` that keep MIN_BATCHES_PER_EPOCH steps and fit the size cap."""
    n = train_size(report)
    cap = max(_batch_cap(image_size), batch_size)
    near = [b for b in BATCH_SIZES if batch_size / 2 <= b <= batch_size * 2 and b <= cap]
    choices = [b for b in near if n // b >= MIN_BATCHES_PER_EPOCH or b == batch_size]
    return sorted(set(choices) | {batch_size})


# ------------------------------------------------------------------------------------ sections


def decoded_mb(report: DatasetReport, c: Choices) -> float:
    """Size of the decoded set (uint8) at the side the images are decoded to."""
    assert c.image_size is not None
    side = round(c.image_size * RESIZE_RATIO) if c.pretrained else c.image_size
    return report.num_images * report.channels * side * side / 2**20


def _pipeline(report: DatasetReport, c: Choices) -> tuple[str, str]:
    size = decoded_mb(report, c)
    if c.memory_budget_mb is None or size <= c.memory_budget_mb:
        budget = f"the {c.memory_budget_mb} MB budget" if c.memory_budget_mb is not None else "memory"
        return "memory", f"decoded images take {size:.0f} MB: they fit {budget}, batches come from RAM"
    return (
        "stream",
        f"decoded images take {size:.0f} MB, over the {c.memory_budget_mb} MB budget: decode per batch",
    )


def _data_section(report: DatasetReport, c: Choices) -> dict[str, Any]:
    assert c.image_size is not None
    pipeline = _pipeline(report, c)[0]
    augmentation: dict[str, Any] = {
        "random_crop": not c.pretrained,
        "crop_padding": max(1, c.image_size // 16),
        "horizontal_flip": bool(c.horizontal_flip),
        "vertical_flip": False,
        "normalize": True,
    }
    if c.pretrained:
        augmentation |= {"random_resized_crop": True, "resized_crop_scale": [0.35, 1.0]}
    return {
        "dataset_name": report.name,
        "data_dir": c.data_dir,
        "image_size": c.image_size,
        "channels": report.channels,
        "class_names": list(report.classes),
        "val_split": VAL_SPLIT,
        "test_split": TEST_SPLIT,
        "pipeline": pipeline,
        "num_workers": min(DECODE_WORKERS_MAX, c.cpus) if pipeline == "stream" else 0,
        "augmentation": augmentation,
    }


def _model_section(report: DatasetReport, c: Choices) -> dict[str, Any]:
    section: dict[str, Any] = {
        "architecture": c.architecture,
        "num_classes": len(report.classes),
        "dropout": DROPOUT,
    }
    if c.architecture in BUILTIN_MODELS:
        assert c.image_size is not None
        section |= {"width": BUILTIN_MODELS[c.architecture]["width"], "depth": 2 if c.image_size <= 32 else 3}
    elif c.pretrained:  # the library's weights (torch hub / Hugging Face cache), head replaced
        section |= {"pretrained": True, "weights": "DEFAULT", "freeze_backbone": False}
    else:  # torchvision/timm from random init
        section |= {"pretrained": False, "weights_path": None}
    return section


def _training_section(c: Choices) -> dict[str, Any]:
    return {
        "num_epochs": c.num_epochs,
        "batch_size": c.batch_size,
        "device": c.device,
        "seed": SEED,
        "deterministic": True,
        "monitor": "val_acc",
        "monitor_mode": "max",
        "early_stopping": {"enabled": False, "monitor": "val_loss", "mode": "min", "patience": 5},
    }


def _search_space(report: DatasetReport, c: Choices) -> dict[str, Any]:
    assert c.batch_size is not None and c.image_size is not None
    space: dict[str, Any] = {
        "optimizer.lr": {"type": "loguniform", "low": 1.0e-4, "high": 3.0e-2},
        "optimizer.weight_decay": {"type": "loguniform", "low": 1.0e-5, "high": 1.0e-1},
        "optimizer.name": {"type": "categorical", "choices": ["adamw", "sgd"]},
        "optimizer.momentum": {
            "type": "uniform",
            "low": 0.8,
            "high": 0.99,
            "condition": {"parameter": "optimizer.name", "value": "sgd"},
        },
    }
    batch_sizes = batch_size_choices(report, c.batch_size, c.image_size)
    if len(batch_sizes) > 1:  # a tiny dataset leaves one sensible batch size: nothing to search
        space["training.batch_size"] = {"type": "categorical", "choices": batch_sizes}
    space["model.dropout"] = {"type": "uniform", "low": 0.0, "high": 0.5}
    if c.pretrained:
        space["optimizer.backbone_lr_mult"] = {"type": "loguniform", "low": 0.01, "high": 1.0}
        space["model.freeze_backbone"] = {"type": "categorical", "choices": [False, True]}
    builtin = BUILTIN_MODELS.get(c.architecture)
    if builtin is not None:
        low, high = builtin["depth_range"]
        space |= {
            "model.width": {"type": "categorical", "choices": builtin["width_choices"]},
            "model.depth": {"type": "int", "low": low, "high": high},
        }
    return space


def _search_section(report: DatasetReport, c: Choices) -> dict[str, Any]:
    assert c.num_epochs is not None
    return {
        "study_name": f"{report.name}_optimization",
        "storage": default_storage_url(RUNS_DIR),
        "n_trials": c.n_trials,
        "direction": "maximize",
        "metric": "val_acc",
        "sampler": {"type": "TPESampler", "n_startup_trials": max(5, c.n_trials // 4)},
        "pruner": {
            "type": "MedianPruner",
            "n_startup_trials": PRUNER_STARTUP_TRIALS,
            "n_warmup_steps": pruner_warmup(c.num_epochs),
        },
        "search_space": _search_space(report, c),
        "keep_checkpoints": "best",
    }


def build_mapping(report: DatasetReport, choices: Choices) -> dict[str, Any]:
    """The config as a plain mapping; every key exists in `config/schema.py`."""
    c = resolve(report, choices)
    mapping: dict[str, Any] = {
        "data": _data_section(report, c),
        "model": _model_section(report, c),
        "training": _training_section(c),
        "optimizer": {"name": "adamw", "lr": 1.0e-3, "weight_decay": 1.0e-4, "momentum": 0.9}
        | ({"backbone_lr_mult": BACKBONE_LR_MULT} if c.pretrained else {}),
        "scheduler": {"name": "cosine", "min_lr": 0.0},
        "output": {"runs_dir": RUNS_DIR, "name": None},
    }
    if c.optuna:
        mapping["search"] = _search_section(report, c)
    return mapping


def decision_notes(report: DatasetReport, choices: Choices) -> dict[str, str]:
    """Why the dataset-dependent values were chosen, keyed by dotted config key."""
    c = resolve(report, choices)
    notes = {
        "data.image_size": "your choice"
        if choices.image_size
        else _image_size_and_reason(report, c.architecture)[1],
        "data.channels": f"images are {report.channel_kind}",
        "data.augmentation.horizontal_flip": (
            "your choice"
            if choices.horizontal_flip is not None
            else (
                "off: digits/letters change meaning when mirrored"
                if is_text_like(report)
                else "natural images"
            )
        ),
        "training.batch_size": "your choice"
        if choices.batch_size
        else f"about {TARGET_BATCHES_PER_EPOCH} steps per epoch on {train_size(report)} training images",
        "training.num_epochs": "your choice"
        if choices.num_epochs
        else f"about {TARGET_STEPS} optimizer steps",
        "data.pipeline": _pipeline(report, c)[1],
    }
    if c.pretrained:
        cached = c.architecture in c.cached_backbones
        notes["model.architecture"] = (
            "your choice"
            if choices.architecture
            else f"photo-like images: fine-tune a pretrained {c.architecture}"
            + (" (its weights are in the local cache)" if cached else "")
        )
        notes["model.pretrained"] = (
            "--pretrained"
            if choices.pretrained
            else "weights found in the local cache"
            if cached
            else "weights are downloaded to the cache on the first run"
        )
        if not choices.image_size:
            notes["data.image_size"] = _transfer_image_size(report, c)[1]
        notes["optimizer.backbone_lr_mult"] = "the pretrained backbone learns 10x slower than the new head"
        if c.optuna:
            notes["search.search_space.optimizer.backbone_lr_mult"] = (
                "how far to move the pretrained features"
            )
            notes["search.search_space.model.freeze_backbone"] = (
                "train the head only, or fine-tune everything"
            )
    if c.optuna:
        assert c.num_epochs is not None
        notes["search.pruner.n_warmup_steps"] = f"below num_epochs ({c.num_epochs}) so pruning can act"
        notes["search.search_space.training.batch_size"] = (
            f"each keeps >= {MIN_BATCHES_PER_EPOCH} steps per epoch"
        )
    return notes


# ------------------------------------------------------------------------------------ YAML text


def _comment_block(text: str, pad: str) -> list[str]:
    return [f"{pad}# {line}" for line in textwrap.wrap(text, width=100 - len(pad))]


def _scalar(value: Any) -> str:
    """One value in YAML flow form (lists on one line); PyYAML picks quoting and float spelling."""
    dumped = yaml.safe_dump(value, default_flow_style=True, width=1 << 30)
    return dumped.removesuffix("\n").removesuffix("\n...")


def render_yaml(
    mapping: Mapping[str, Any], comments: Mapping[str, str], prefix: str = "", depth: int = 0
) -> list[str]:
    """YAML lines with a comment above each commented section and at the end of each commented value.

    Values are dumped by PyYAML one key at a time, so floats read back as floats (`1.0e-05`).
    """
    pad = "  " * depth
    lines: list[str] = []
    for key, value in mapping.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        note = comments.get(path)
        if depth == 0 and lines:
            lines.append("")
        if isinstance(value, Mapping) and value:
            lines.extend(_comment_block(note, pad) if note else [])
            lines.append(f"{pad}{key}:")
            lines.extend(render_yaml(value, comments, path, depth + 1))
            continue
        lines.append(f"{pad}{key}: {_scalar(value)}" + (f"  # {note}" if note else ""))
    return lines


def header(report: DatasetReport, c: Choices, config_path: str) -> list[str]:
    lines = [
        f"Training config for dataset '{report.name}', written by ml-init-config from {c.data_dir}:",
        f"{report.num_images} images, {len(report.classes)} classes, median size "
        f"{format_size(report.median_size)}, {report.channel_kind}.",
        f"Train:  ml-train --config {config_path}",
    ]
    if c.optuna:
        lines.append(f"Search: ml-search --config {config_path} --n-trials {c.n_trials}")
    lines.append(
        "Any key can be overridden on the command line, e.g. ml-train --config FILE optimizer.lr=0.01"
    )
    return [f"# {line}" for line in lines]


def generate_config(report: DatasetReport, choices: Choices, config_path: str = "CONFIG") -> GeneratedConfig:
    """The config mapping, its commented YAML text and the reasons behind the data-driven values."""
    mapping = build_mapping(report, choices)
    notes = decision_notes(report, choices)
    comments = {**SECTION_COMMENTS, **KEY_COMMENTS, **notes}
    text = "\n".join(
        [*header(report, resolve(report, choices), config_path), "", *render_yaml(mapping, comments)]
    )
    return GeneratedConfig(mapping=mapping, text=text + "\n", notes=notes)
