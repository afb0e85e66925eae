"""The training config: every key, its type and its default.

Config files are merged onto this schema, so a key that is not here is an error (with the nearest
existing keys), never a silently ignored setting. The open mappings (`model.kwargs`,
`search.sampler`, `search.pruner`, `search.search_space`) are checked by the code that consumes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# OmegaConf structured configs need typing.Optional/List/Dict-style annotations it can introspect;
# `from __future__ import annotations` is fine with OmegaConf >= 2.1.

OPEN_MAPPINGS = ("model.kwargs", "search.sampler", "search.pruner", "search.search_space")


@dataclass
class AugmentationConfig:
    random_crop: bool = False  # pad by `crop_padding` then crop back at a random offset
    crop_padding: int = 2
    padding_mode: str = "zeros"  # zeros, reflect, replicate
    horizontal_flip: bool = False
    vertical_flip: bool = False
    normalize: bool = True  # per-channel mean/std of the training split


@dataclass
class DataConfig:
    dataset_name: str = "dataset"
    data_dir: str = "data/dataset"  # images in <data_dir>/raw/<class>/<file>
    image_size: int = 32
    channels: int = 3  # 1 (grayscale) or 3 (RGB); images are converted
    class_names: list[str] | None = None  # if set, must equal the class folders found
    val_split: float = 0.15
    test_split: float = 0.15
    split_seed: int | None = None  # seed of the train/val/test split and folds; None: training.seed
    n_folds: int = 5  # folds over train+val for cross-validation
    stratified_folds: bool = True  # folds keep every class's share; false: plain shuffled k-fold
    fold: int | None = None  # validate on this fold (0-based) instead of the fixed val split
    num_workers: int = 0  # processes that decode images on a cache miss (0: in process)
    cache_dir: str | None = None  # decoded-dataset cache; default <data_dir>/.cache
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)


@dataclass
class ModelConfig:
    architecture: str = "simple_cnn"  # simple_cnn, mlp, a torchvision name, or timm/<name>
    num_classes: int | None = None  # None: the number of class folders
    pretrained: bool = False  # needs weights_path: nothing is downloaded
    weights_path: str | None = None
    dropout: float = 0.2
    width: int = 32  # built-ins: channels of the first conv block / hidden units of the MLP
    depth: int = 2  # built-ins: conv blocks / hidden layers
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    monitor: str = "val_loss"
    mode: str = "min"  # min or max
    patience: int = 5
    min_delta: float = 0.0


@dataclass
class TrainingConfig:
    num_epochs: int = 10
    batch_size: int = 64
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:N
    seed: int = 42
    deterministic: bool = True
    amp: bool = True  # mixed precision, CUDA only
    channels_last: bool = True  # CUDA only
    monitor: str = "val_acc"  # metric that picks the best checkpoint
    monitor_mode: str = "max"
    grad_clip_norm: float | None = None
    label_smoothing: float = 0.0
    num_threads: int | None = None  # torch CPU threads; None: torch's default
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class OptimizerConfig:
    name: str = "adamw"  # sgd, adam, adamw, rmsprop
    lr: float = 1e-3
    momentum: float = 0.9  # sgd, rmsprop
    nesterov: bool = False  # sgd
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw


@dataclass
class SchedulerConfig:
    name: str = "cosine"  # none, step, cosine, plateau, warmup_cosine
    step_size: int = 10  # step
    gamma: float = 0.1  # step; plateau (factor)
    warmup_epochs: int = 0  # warmup_cosine
    min_lr: float = 0.0  # cosine, warmup_cosine, plateau
    patience: int = 3  # plateau


@dataclass
class OutputConfig:
    runs_dir: str = "runs"
    name: str | None = None  # run dir name; default <dataset>_<architecture>_<timestamp>


@dataclass
class CrossValidationConfig:
    enabled: bool = False
    n_folds: int = 5
    stratified: bool = True
    aggregation: str = "mean"  # mean or median


@dataclass
class SearchEarlyStoppingConfig:
    enabled: bool = False
    patience: int = 10  # finished trials without improvement
    min_delta: float = 0.0


@dataclass
class SearchConfig:
    study_name: str | None = None  # default <dataset>_optimization
    storage: str | None = None  # default sqlite:///<runs_dir>/optuna_studies/optuna.db
    n_trials: int | None = 20  # with --resume: trials to add
    timeout: float | None = None  # seconds
    direction: str = "maximize"
    metric: str = "val_acc"
    metrics: list[str] | None = None  # multi-objective
    directions: list[str] | None = None
    sampler: dict[str, Any] = field(default_factory=lambda: {"type": "TPESampler"})
    pruner: dict[str, Any] = field(default_factory=lambda: {"type": "MedianPruner"})
    search_space: dict[str, Any] = field(default_factory=dict)
    keep_checkpoints: str = "best"  # best, all, none
    n_workers: int = 1
    heartbeat_interval: int = 10  # seconds; a trial silent for grace_period is failed and retried
    grace_period: int = 30
    max_retry: int = 2  # retries of a trial whose worker died
    cross_validation: CrossValidationConfig = field(default_factory=CrossValidationConfig)
    early_stopping: SearchEarlyStoppingConfig = field(default_factory=SearchEarlyStoppingConfig)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    search: SearchConfig | None = None
