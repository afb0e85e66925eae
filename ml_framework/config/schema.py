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

OPEN_MAPPINGS = (
    "model.kwargs",
    "search.sampler",
    "search.pruner",
    "search.search_space",
    "search.ray.scheduler",  # the Tune scheduler's constructor options (search/ray_engine.py)
    "search.ray.resources_per_trial",  # cpu, gpu: checked by search/ray_engine.py
)

# Tabular estimators take their own parameters as plain `model.<param>` keys (`model.n_estimators`);
# the model factory checks them against the estimator's get_params().
ESTIMATOR_ARCHITECTURES = ("xgboost", "lightgbm")
ESTIMATOR_PREFIX = "sklearn/"


def takes_estimator_params(architecture: object) -> bool:
    """Whether `model.architecture` is a tabular estimator (sklearn/<Name>, xgboost, lightgbm)."""
    return isinstance(architecture, str) and (
        architecture in ESTIMATOR_ARCHITECTURES or architecture.startswith(ESTIMATOR_PREFIX)
    )


@dataclass
class AugmentationConfig:
    random_crop: bool = False  # pad by `crop_padding` then crop back at a random offset
    crop_padding: int = 2
    padding_mode: str = "zeros"  # zeros, reflect, replicate
    horizontal_flip: bool = False
    vertical_flip: bool = False
    normalize: bool = True  # (x - mean) / std with data.mean/std (default: weights preset or training split)
    # torchvision.transforms.v2, per sample, in both pipelines:
    random_resized_crop: bool = False  # crop a random area/aspect, resize to image_size
    resized_crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # area fraction range
    resized_crop_ratio: list[float] = field(default_factory=lambda: [0.75, 1.3333333])  # aspect range
    color_jitter: float = 0.0  # brightness, contrast and saturation jitter strength (0: off)
    auto_augment: str = "none"  # none, trivialaugment, randaugment, autoaugment
    random_erasing: float = 0.0  # probability of erasing a random rectangle
    mixup_alpha: float = 0.0  # > 0: MixUp (Beta(alpha, alpha)); the loss uses soft targets
    cutmix_alpha: float = 0.0  # > 0: CutMix; with mixup_alpha too, one of them per batch


@dataclass
class PreprocessConfig:
    """Tables (`data.format: csv|parquet`): the scikit-learn ColumnTransformer built from column types."""

    numeric_impute: str = "median"  # mean, median, most_frequent, constant (0), none
    categorical_impute: str = "most_frequent"  # most_frequent, constant ("missing"), none
    encoding: str = "auto"  # auto (native for xgboost/lightgbm, else onehot), onehot, ordinal, native
    max_categories: int = 20  # one-hot: rarer categories share one "infrequent" column
    scaling: str = "auto"  # auto (standard for non-tree models), standard, minmax, robust, none


@dataclass
class DataConfig:
    dataset_name: str = "dataset"
    data_dir: str = "data/dataset"  # images in <data_dir>/raw/<class>/<file>
    image_size: int | None = None  # None: the pretrained weights' crop size, else 32
    resize_size: int | None = None  # decoded side; evaluation center-crops image_size; None: see README
    mean: list[float] | None = None  # normalisation; None: weights preset, else the training split's
    std: list[float] | None = None
    channels: int = 3  # 1 (grayscale) or 3 (RGB); images are converted
    class_names: list[str] | None = None  # if set, must equal the class folders found
    val_split: float = 0.15
    test_split: float = 0.15
    split_seed: int | None = None  # seed of the train/val/test split and folds; None: training.seed
    n_folds: int = 5  # folds over train+val for cross-validation
    stratified_folds: bool = True  # folds keep every class's share; false: plain shuffled k-fold
    fold: int | None = None  # validate on this fold (0-based) instead of the fixed val split
    num_workers: int = 0  # processes that decode images (cache miss; stream DataLoader workers)
    pipeline: str = "auto"  # memory (decoded uint8 cache), stream (decode per batch) or auto
    memory_budget_mb: int | None = None  # auto: memory when the decoded set fits; None: from free RAM
    cache_dir: str | None = None  # decoded-dataset cache; default <data_dir>/.cache
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    # Tabular data: a table file instead of an image folder.
    format: str = "images"  # images (data_dir/raw/<class>/), csv, parquet
    path: str | None = None  # the csv/parquet file
    target: str | None = None  # the column to predict
    task: str | None = None  # classification or regression; None: inferred from the target
    features: list[str] | None = None  # feature columns; None: every column but target and drop
    drop: list[str] = field(default_factory=list)  # columns never used (IDs, leaks)
    split: str = "random"  # random (stratified for classification) or timeseries (rows in time order)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)


@dataclass
class ModelConfig:
    # simple_cnn, mlp, a torchvision name, timm/<name>; tabular data: sklearn/<Estimator>, xgboost,
    # lightgbm (their parameters are plain keys: model.n_estimators) or mlp
    architecture: str = "simple_cnn"
    num_classes: int | None = None  # None: the number of class folders
    pretrained: bool = False  # torchvision weights API / timm hub cache, or weights_path when set
    weights: str = "DEFAULT"  # torchvision weights enum member (IMAGENET1K_V1, DEFAULT, ...)
    weights_path: str | None = None  # a local state_dict file instead of the libraries' weights
    freeze_backbone: bool = False  # train the classifier head only (see training.unfreeze_epoch)
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
    # Speed settings; `auto` times a few training steps of each choice once per device/model/shape and
    # caches the decision in <runs_dir>/.autotune.json (the run's config.yaml records the concrete choice).
    precision: str = "auto"  # auto, fp32, bf16, fp16 (CUDA; on CPU it falls back to fp32 with a warning)
    amp: bool | None = None  # old alias of precision: true = auto, false = fp32
    channels_last: Any = "auto"  # auto, true, false: channels-last model and batches
    compile: Any = "auto"  # auto, true, false: torch.compile; auto never compiles short runs or trials
    monitor: str = "val_acc"  # metric that picks the best checkpoint
    monitor_mode: str = "max"
    grad_clip_norm: float | None = None
    label_smoothing: float = 0.0
    unfreeze_epoch: int | None = None  # with model.freeze_backbone: train the backbone from this epoch
    num_threads: int | None = None  # torch CPU threads; None: torch's default
    eval_every: int = 1  # xgboost/lightgbm: report validation metrics every k boosting rounds
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class OptimizerConfig:
    name: str = "adamw"  # sgd, adam, adamw, rmsprop
    lr: float = 1e-3
    momentum: float = 0.9  # sgd, rmsprop
    nesterov: bool = False  # sgd
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw
    backbone_lr_mult: float = 1.0  # backbone learning rate = lr x this; the classifier head gets lr


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
class TrackingConfig:
    backend: str = "none"  # none, mlflow, wandb
    uri: str | None = None  # MLflow; default $MLFLOW_TRACKING_URI or sqlite:///<runs_dir>/mlflow.db
    experiment: str | None = None  # MLflow experiment; default data.dataset_name
    project: str | None = None  # W&B project; default data.dataset_name
    log_checkpoints: bool = False  # also upload checkpoints/best.pt


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
class RaySearchConfig:
    """search.ray: Ray Tune as the search engine (search.engine: ray; search/ray_engine.py)."""

    scheduler: dict[str, Any] = field(default_factory=lambda: {"type": "fifo"})  # fifo, asha, hyperband, pbt
    resources_per_trial: dict[str, float] = field(default_factory=lambda: {"cpu": 1})  # cpu, gpu (0.5: 2/GPU)
    max_concurrent: int | None = None  # trials at once (None: as many as the resources allow)
    address: str | None = None  # an existing cluster: auto, ray://host:10001; None: a local runtime
    max_failures: int = 0  # restarts of a failed or killed trial from its last checkpoint


@dataclass
class SearchConfig:
    study_name: str | None = None  # default <dataset>_optimization
    storage: str | None = None  # default sqlite:///<runs_dir>/optuna_studies/optuna.db
    n_trials: int | None = 20  # with --resume: trials to add
    timeout: float | None = None  # seconds
    direction: str | None = None  # goes with `metric`; unset: from its name (val_loss minimises)
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
    engine: str = "native"  # native (Optuna's own loop) or ray (Ray Tune: search.ray)
    ray: RaySearchConfig = field(default_factory=RaySearchConfig)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    search: SearchConfig | None = None
