"""What several commands load from their arguments: a run's models, its split, prompt templates, a re-ranker."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from modalign.errors import ConfigError

if TYPE_CHECKING:
    from modalign.model import AlignedModel
    from modalign.search.index import SearchIndex
    from modalign.search.invgc import InvGCReranker
    from modalign.workflows.evaluate import ScoredSplit

logger = logging.getLogger(__name__)


def load_run_models(run_dir: Path, device: str = "cpu", with_baselines: bool = True) -> dict[str, AlignedModel]:
    """{"model": the run's model, BASELINE: each saved baseline}, sharing loaded encoders."""
    from modalign.model import AlignedModel
    from modalign.workflows.evaluate import share_encoders

    if (run_dir / "fit_config.json").is_file() and not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir} holds no finished model (fit_config.json but no config.json): the run that "
                          "wrote it failed or is still running; train again")
    models = {"model": AlignedModel.from_pretrained(run_dir, device=device)}
    run_id = models["model"].metadata.get("run_id")
    base_dir = run_dir / "baselines"
    if with_baselines and base_dir.is_dir():
        for d in sorted(base_dir.iterdir()):
            if (d / "config.json").is_file():
                baseline = AlignedModel.from_pretrained(d, device=device)
                if baseline.metadata.get("run_id") != run_id:
                    logger.warning("ignoring %s: it was fitted by another run into this folder, not beside this "
                                   "model (delete it)", d)
                    continue
                models[d.name] = baseline
    share_encoders(list(models.values()))
    return models


def scored_split(run_dir: Path, split: str, names: list[str], what: str) -> ScoredSplit:
    """The items to score (see workflows.evaluate.pick_split), logged with the reason."""
    from modalign.workflows.evaluate import pick_split, read_run_split

    chosen = pick_split(names, read_run_split(run_dir), split)
    logger.info("scoring the %s split: %d of %d %s (%s)", chosen.name, chosen.count(len(names)), len(names), what,
                chosen.reason)
    return chosen


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
