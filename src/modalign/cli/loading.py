"""What several commands load from their arguments: a run's models, its split, prompt templates, a re-ranker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from modalign.errors import ConfigError

if TYPE_CHECKING:
    from modalign.data.column import AlignedDataset
    from modalign.model import AlignedModel
    from modalign.search.index import SearchIndex
    from modalign.search.invgc import InvGCReranker


def load_run_models(run_dir: Path, device: str = "cpu", with_baselines: bool = True) -> dict[str, AlignedModel]:
    """{"model": the run's model, BASELINE: each saved baseline}, sharing loaded encoders."""
    from modalign.model import AlignedModel
    from modalign.workflows.evaluate import share_encoders

    models = {"model": AlignedModel.from_pretrained(run_dir, device=device)}
    base_dir = run_dir / "baselines"
    if with_baselines and base_dir.is_dir():
        for d in sorted(base_dir.iterdir()):
            if (d / "config.json").is_file():
                models[d.name] = AlignedModel.from_pretrained(d, device=device)
    share_encoders(list(models.values()))
    return models


def split_groups(run_dir: Path, split: str, dataset: AlignedDataset) -> np.ndarray | None:
    """Group indices of `dataset` in the run's `split` (split.json); None for "all"."""
    if split == "all":
        return None
    from modalign.workflows.fit import read_run_split

    split_file = run_dir / "split.json"
    if not split_file.is_file():
        raise ConfigError(f"--split {split} needs {split_file} (written by `modalign train`)")
    splits = read_run_split(run_dir)  # checked against the model's split hash: never another run's split
    if split not in splits:
        raise ConfigError(f"{split_file} has no {split!r} part; it has: {', '.join(splits)}")
    names = set(splits[split])
    groups = np.array([i for i, n in enumerate(dataset.group_names) if n in names], dtype=np.int64)
    if len(groups) == 0:
        raise ConfigError(f"none of the {split} items of {split_file} are in this data set: is it the "
                          "same pairs file the model was trained on?")
    return groups


def read_templates(value: str) -> str | list[str]:
    """A template set name ("default") or a .json file holding a list of templates."""
    path = Path(value)
    if path.suffix == ".json" and path.is_file():
        return json.loads(path.read_text())
    return value


def reranker_for(index: SearchIndex, model: AlignedModel, mode: str) -> InvGCReranker | None:
    """The query-time re-ranker of `--invgc off|invgc|localadj` (a saved one when its settings match)."""
    if mode == "off":
        return None
    from modalign.search.invgc import InvGCConfig, InvGCReranker

    # LocalAdj: the best validation setting on Tux Paint (benchmarks/bench_index.py invgc). Plain InvGC
    # showed no validation gain there (best r = 0), so a mild setting that changed little is the default
    cfg = InvGCConfig(1.0, 1.0, 0) if mode == "invgc" else InvGCConfig(0.0, 0.2, 50)
    saved = InvGCReranker.load(index.folder)
    if saved is not None and saved.config == cfg:
        return saved
    return InvGCReranker.for_index(index, model, cfg)
