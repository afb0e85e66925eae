"""TensorBoard logging: per-epoch scalars and an hparams session per run, so the HParams dashboard
compares every run (and every trial of a study) side by side."""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ml_framework.training.callbacks import Callback
from ml_framework.training.rundir import trial_fold

HPARAM_SECTIONS = ("data", "model", "training", "optimizer", "scheduler")
SKIPPED_HPARAMS = (
    "data.data_dir",
    "data.cache_dir",
    "data.class_names",
    "data.num_workers",
    "training.device",
)


def flatten_hparams(
    cfg: DictConfig | dict[str, Any], extra: dict[str, Any] | None = None
) -> dict[str, float | int | str | bool]:
    """Scalar config values by dotted key (lists and None as text), plus `extra` (e.g. sampled params).
    `cfg` may be the config's `plain_config` already."""
    out: dict[str, float | int | str | bool] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}")
        elif prefix not in SKIPPED_HPARAMS:
            out[prefix] = node if isinstance(node, bool | int | float | str) else str(node)

    container = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    for section in HPARAM_SECTIONS:
        walk(container.get(section, {}), section)
    for k, v in (extra or {}).items():
        out[k] = v if isinstance(v, bool | int | float | str) else str(v)
    return out


def run_hparams(
    cfg: DictConfig, extra: dict[str, Any] | None, trial: bool
) -> dict[str, float | int | str | bool]:
    """The hparams of a run's TensorBoard session; none for a cross-validation fold of a search trial
    (`rundir.trial_fold`): the trial writes one session for its folds."""
    return {} if trial_fold(cfg, trial) else flatten_hparams(cfg, extra)


class EventFile:
    """A TensorBoard event file (`events.out.tfevents.<time>.<host>.<pid>.<n>`, TensorBoard's own record
    format), written as events come. TensorBoard's EventFileWriter hands each event to a thread of its
    own: a run writes a few events per epoch, and waiting for that thread cost more than the writes."""

    def __init__(self, log_dir: Path) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.summary.writer.record_writer import RecordWriter

        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        self.path = Path(log_dir) / f"{name}.{next(_EVENT_FILES)}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records = RecordWriter(open(self.path, "wb"))  # noqa: SIM115  # closed by close()
        self.add_event(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def add_event(self, event: Any) -> None:
        self._records.write(event.SerializeToString())

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        self._records.close()


_EVENT_FILES = itertools.count()  # the <n> of event files made by this process


class TensorBoardLogger(Callback):
    """Scalars per epoch and one hparams session per run, written with TensorBoard's own record format
    and hparams protos (not torch's SummaryWriter: a table run never imports torch)."""

    def __init__(self, log_dir: Path, hparams: dict[str, Any], purge_step: int | None = None) -> None:
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        self.hparams = hparams
        self.writer = EventFile(log_dir)
        if purge_step is not None:  # a resumed run: TensorBoard drops the old events from this step on
            self.writer.add_event(Event(step=purge_step, file_version="brain.Event:2"))
            self.writer.add_event(Event(step=purge_step, session_log=SessionLog(status=SessionLog.START)))

    def add_scalar(self, tag: str, value: float, step: int = 0) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(value))])
        self.writer.add_event(Event(wall_time=time.time(), step=int(step), summary=summary))

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if key != "epoch":
                self.add_scalar(key, value, epoch)
        self.writer.flush()

    def finish(self, results: dict[str, float], completed: bool = True) -> None:
        """Write the hparams session (config, start, end) with the run's best/final/test metrics as its
        metrics, then close. A logger without hparams (a cross-validation fold: its trial holds the
        session) writes no session."""
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2

        results = {k: v for k, v in results.items() if isinstance(v, int | float)}
        if results and self.hparams:
            end = plugin_data_pb2.SessionEndInfo(
                status=api_pb2.STATUS_SUCCESS if completed else api_pb2.STATUS_FAILURE,
                end_time_secs=time.time(),
            )
            session_end = Summary(
                value=[
                    Summary.Value(
                        tag=metadata.SESSION_END_INFO_TAG,
                        metadata=metadata.create_summary_metadata(
                            plugin_data_pb2.HParamsPluginData(session_end_info=end)
                        ),
                        tensor=metadata.NULL_TENSOR,
                    )
                ]
            )
            experiment = summary_v2.hparams_config_pb(
                [summary_v2.HParam(k) for k in self.hparams], [summary_v2.Metric(k) for k in results]
            )
            for summary in (experiment, summary_v2.hparams_pb(self.hparams), session_end):
                self.writer.add_event(Event(wall_time=time.time(), summary=summary))
            for key, value in results.items():
                self.add_scalar(key, value)
        self.writer.close()
