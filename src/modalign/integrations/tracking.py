"""Experiment tracking: a training run's per-epoch records as TensorBoard scalars (extra `tracking`).

    from modalign.integrations.tracking import TensorBoardLogger
    with TensorBoardLogger("runs/tux/tb") as tb:
        train(model, train_fs, val_fs, cfg, on_epoch=tb)      # or fit(...) with its own on_epoch chained

Every numeric field of a record (train_loss, lr, temperature, val_mean_recall@1 ...) becomes a scalar
tagged by its name, at the record's optimisation step (or its epoch when it has no step).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from modalign.utils.paths import user_path

logger = logging.getLogger(__name__)

_NOT_SCALARS = ("epoch", "step")


class TensorBoardLogger:
    """A trainer on_epoch callback that writes TensorBoard event files under `log_dir`."""

    def __init__(self, log_dir: str | Path, config: Mapping[str, Any] | None = None,
                 then: Callable[[dict[str, float]], None] | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("TensorBoard logging needs the `tensorboard` package: "
                              "pip install 'modalign[tracking]'") from e
        self.log_dir = user_path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.then = then  # another on_epoch callback to chain (e.g. fit's metrics.jsonl writer)
        if config:
            import json

            self.writer.add_text("config", "```json\n" + json.dumps(dict(config), indent=2, default=str) + "\n```")

    def __call__(self, record: dict[str, float]) -> None:
        step = int(record.get("step", record.get("epoch", 0)))
        for k, v in record.items():
            if k in _NOT_SCALARS or not isinstance(v, int | float) or isinstance(v, bool):
                continue
            if math.isfinite(float(v)):
                self.writer.add_scalar(k, float(v), global_step=step)
        self.writer.flush()
        if self.then is not None:
            self.then(record)

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from the event files under `log_dir` (tensorboard's EventAccumulator)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(user_path(log_dir)))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
