"""End-to-end fitting: a data set and encoder specs in, a run folder out.

    run = fit(load_pairs("pairs.csv"), FitConfig(encoders={"image": "effnet-lite0", "text": "minilm-l6"}),
              out_dir="runs/mine", store=EmbeddingStore(".modalign/store"))

The run folder is itself a loadable model (config.json + model.safetensors), plus:
  fit_config.json    the resolved configuration (repeat the run with it)
  split.json         which groups went to train / val / test
  metrics.jsonl      one line per epoch (loss, lr, temperature, validation retrieval)
  curves.png         loss and validation recall per epoch
  results.json       test-split retrieval of the model and of each baseline, flat, CLIP_benchmark names
  baselines/NAME/    each baseline as a loadable model (ridge, procrustes)

The folder is written whole: everything goes into `.NAME.partial-PID-*` beside it, renamed into place
when complete, so a crash (kill -9 included) leaves the previous run untouched and the partial folder
clearly marked (an INCOMPLETE file; the next run removes it). An existing non-empty folder is replaced
only with overwrite=True (`--overwrite`). The model's metadata records `split_hash`, the hash of
split.json, so evaluating a split checks that the split is the one the model was trained on.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modalign.align.features import FeatureSet
from modalign.align.layer_mix import check_mix
from modalign.align.trainer import TrainConfig, evaluate_features
from modalign.data.column import AlignedDataset
from modalign.encoders.base import FINAL_LAYER, Encoder
from modalign.encoders.layers import layer_dims
from modalign.errors import ConfigError, MismatchError
from modalign.features.pipeline import Embeddings, encode_dataset, feature_set
from modalign.model import AlignedModel, TowerConfig
from modalign.utils.config import MERGE, load_config
from modalign.utils.hashing import hash_json
from modalign.utils.io import atomic_write_json, staged_folder
from modalign.utils.paths import user_path
from modalign.workflows.methods import fit_method

if TYPE_CHECKING:
    from modalign.store import EmbeddingStore

logger = logging.getLogger(__name__)

DEFAULT_ENCODERS = {"image": "effnet-lite0", "text": "minilm-l6"}


@dataclass
class FitConfig:
    encoders: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ENCODERS), metadata=MERGE)  # modality
    #                                                        -> spec; a table given sets only the modalities it names
    layers: dict[str, str | list[str]] = field(default_factory=dict, metadata=MERGE)  # modality -> layer(s) (default:
    #                                                                                   "final")
    layer_mix: dict[str, str] = field(default_factory=dict, metadata=MERGE)  # modality -> "concat" | "mean"
    method: str = "mlp"  # a registered alignment method (modalign.workflows.methods)
    baselines: list[str] = field(default_factory=lambda: ["ridge", "procrustes"])  # fitted beside it
    split: dict[str, float] = field(default_factory=lambda: {"train": 0.7, "val": 0.1, "test": 0.2})
    split_seed: int = 0  # the split depends only on this and the number of groups
    store_dtype: str = "float32"  # "float16" halves the store on disk
    encode_batch_size: int = 32
    device: str = "cpu"
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitConfig:
        return load_config(cls, d, what="fit")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitResult:
    out_dir: Path
    model: AlignedModel
    baselines: dict[str, AlignedModel]
    results: dict[str, dict[str, float]]  # method -> test metrics
    split: dict[str, np.ndarray]  # split name -> group indices
    history: list[dict[str, float]]
    seconds: dict[str, float]  # encode / train / baselines


def _check_split(split: dict[str, float]) -> None:
    if "train" not in split:
        raise ConfigError(f"the split needs a 'train' part; got {split}")
    if any(v < 0 for v in split.values()) or sum(split.values()) <= 0:
        raise ConfigError(f"split fractions must be >= 0 and sum to > 0; got {split}")


def fit(dataset: AlignedDataset, config: FitConfig, out_dir: str | Path, store: EmbeddingStore,
        progress: bool = True, plots: bool = True, overwrite: bool = False) -> FitResult:
    """Encodes, trains, fits the baselines and writes the run folder `out_dir` (whole: see the module doc)."""
    _check_split(config.split)
    missing = [m for m in config.encoders if m not in dataset.columns]
    if missing:
        raise ConfigError(f"data set {dataset.name!r} has no {missing} column(s); it has {dataset.modalities}")
    out_dir = user_path(out_dir)
    with staged_folder(out_dir, overwrite, belongs=is_run_folder) as work:
        result = _fit_into(dataset, config, work, store, progress, plots)
    logger.info("run folder complete: %s", out_dir)
    return replace(result, out_dir=out_dir)


def is_run_folder(folder: Path) -> bool:
    """Whether `folder` holds a run written by fit (or a saved model), i.e. may be replaced by a new run."""
    return (folder / "fit_config.json").is_file() or (folder / "config.json").is_file()


def split_hash(split: dict[str, list[str]]) -> str:
    """Hash of a split as split.json holds it (split name -> group names): stored in the model's metadata."""
    return hash_json({k: list(v) for k, v in split.items()})


def read_run_split(run_dir: Path, metadata: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """A run's split.json (split name -> group names), checked against the split hash in `metadata` (the
    model's, default: read from run_dir/config.json): a mismatch means the folder mixes two runs."""
    from modalign.utils.artifacts import field, read_json_object

    path = run_dir / "split.json"
    raw = read_json_object(path, "run split")
    split = {k: field(raw, k, list, str(path)) for k in raw}
    if metadata is None:
        cfg = read_json_object(run_dir / "config.json", "model config")
        found = cfg.get("metadata")
        metadata = found if isinstance(found, dict) else {}
    expected = metadata.get("split_hash")
    if expected is None:
        logger.warning("%s: the model predates split hashes; cannot check that split.json is its own", run_dir)
    elif expected != split_hash(split):
        raise MismatchError(f"{path} is not the split the model in {run_dir} was trained on (hash {split_hash(split)}"
                            f", model: {expected}): the folder mixes two runs, so train items could be scored as "
                            "held out. Train again into a new folder (or with --overwrite)")
    return split


def _fit_into(dataset: AlignedDataset, config: FitConfig, out_dir: Path, store: EmbeddingStore,
              progress: bool, plots: bool) -> FitResult:
    atomic_write_json(out_dir / "fit_config.json", {"dataset": dataset.name, **config.to_dict()})
    t0 = time.perf_counter()
    towers, stored = _encode(dataset, config, store, progress)
    t_encode = time.perf_counter() - t0
    split = dataset.split(config.split, seed=config.split_seed)
    split_names = {k: [dataset.group_names[g] for g in v] for k, v in split.items()}
    atomic_write_json(out_dir / "split.json", split_names)
    parts = _usable_parts({k: feature_set(dataset, stored, v) for k, v in split.items() if len(v)})
    _log_sizes(parts)

    t1 = time.perf_counter()
    model, history = _fit_model(config, towers, parts, out_dir / "metrics.jsonl", progress)
    t_train = time.perf_counter() - t1
    t2 = time.perf_counter()
    # closed-form baselines read the same stacked features as one plain matrix: a "mean" mix becomes "concat"
    base_towers = {m: replace(t, layer_mix="concat") for m, t in towers.items()}
    baselines = {name: fit_method(name, base_towers, parts["train"], parts.get("val"), config.train)[0]
                 for name in config.baselines}
    t_base = time.perf_counter() - t2

    results = _save_run(out_dir, dataset, config, split_names, parts, model, baselines)
    if plots and history:
        from modalign.report.plots import plot_training_curves

        plot_training_curves(history, out_dir / "curves.png")
    seconds = {"encode": t_encode, "train": t_train, "baselines": t_base}
    logger.info("fit done in %.1fs (encode %.1fs, train %.1fs, baselines %.1fs)",
                sum(seconds.values()), t_encode, t_train, t_base)
    return FitResult(out_dir, model, baselines, results, split, history, seconds)


def _encode(dataset: AlignedDataset, config: FitConfig, store: EmbeddingStore,
            progress: bool) -> tuple[dict[str, TowerConfig], dict[str, Embeddings]]:
    """Each modality's column through its encoder into the store; the tower descriptions."""
    from modalign.encoders.registry import create_encoder

    encoders = {m: create_encoder(spec, device=config.device) for m, spec in config.encoders.items()}
    layers = {m: config.layers.get(m, FINAL_LAYER) for m in encoders}
    stored = encode_dataset(dataset, encoders, store, layers, dtype=config.store_dtype,
                            batch_size=config.encode_batch_size, progress=progress)
    towers = {m: tower_config(m, enc, layers[m], config.layer_mix.get(m, "concat")) for m, enc in encoders.items()}
    return towers, stored


def _fit_model(config: FitConfig, towers: dict[str, TowerConfig], parts: dict[str, FeatureSet],
               metrics_path: Path, progress: bool) -> tuple[AlignedModel, list[dict[str, float]]]:
    """The configured method on the train part (validated on val), logging each epoch to metrics.jsonl."""
    metrics_path.write_text("")

    def on_epoch(record: dict[str, float]) -> None:
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    cfg = config.train
    if cfg.device == "cpu" and config.device != "cpu":
        cfg = replace(cfg, device=config.device)
    model, info = fit_method(config.method, towers, parts["train"], parts.get("val"), cfg, on_epoch=on_epoch,
                             progress=progress)
    return model, info["result"].history if "result" in info else []


def _save_run(out_dir: Path, dataset: AlignedDataset, config: FitConfig, split: dict[str, list[str]],
              parts: dict[str, FeatureSet], model: AlignedModel,
              baselines: dict[str, AlignedModel]) -> dict[str, dict[str, float]]:
    """Test metrics of the model and each baseline, saved beside them; returns method -> metrics."""
    test_fs = parts.get("test") or parts.get("val")
    results = {config.method: _test_metrics(model, test_fs)}
    results.update({name: _test_metrics(b, test_fs) for name, b in baselines.items()})
    data_meta = {"dataset": dataset.name, "n_groups": {k: len(v) for k, v in split.items()},
                 "split_hash": split_hash(split)}
    model.metadata.update({**data_meta, "test_metrics": results[config.method], "split_seed": config.split_seed})
    model.save_pretrained(out_dir)
    for name, b in baselines.items():
        b.metadata.update({**data_meta, "test_metrics": results[name]})
        b.save_pretrained(out_dir / "baselines" / name)
    atomic_write_json(out_dir / "results.json", {"split": "test" if "test" in parts else "val", "methods": results})
    return results


def tower_config(modality: str, encoder: Encoder, layer: str | list[str], mix: str) -> TowerConfig:
    """A tower description; several layers are checked against the mix mode (equal widths for "mean")."""
    dims = layer_dims(encoder, layer)
    check_mix(mix, dims)
    if len(dims) == 1 and mix != "concat":
        logger.warning("layer mix %r for the %s tower has no effect: it reads one layer (%s)", mix, modality, layer)
    if len(dims) > 1:
        logger.info("%s tower reads %d layers of %s (%s, %d-d)", modality, len(dims), encoder.spec, mix, sum(dims))
    return TowerConfig(modality, encoder.spec, layer, sum(dims), encoder.fingerprint(), layer_mix=mix)


def _test_metrics(model: AlignedModel, data: FeatureSet | None) -> dict[str, float]:
    return evaluate_features(model, data) if data is not None else {}


def _usable_parts(parts: dict[str, FeatureSet]) -> dict[str, FeatureSet]:
    """The split parts that hold at least one group with an item in every modality (skipped items can leave
    a small part without any image): an empty validation or test part is left out with a warning."""
    out = {}
    for name, part in parts.items():
        if len(part.shared_groups()):
            out[name] = part
        else:
            logger.warning("the %s part has no group with an item of every modality left (its items were "
                           "skipped); it is left out", name)
    if "train" not in out:
        raise ConfigError("no training group has an item of every modality: were all items skipped? See the "
                          "encode report above")
    return out


def _log_sizes(parts: dict[str, FeatureSet]) -> None:
    for name, fs in parts.items():
        logger.info("%s: %s", name, ", ".join(f"{len(x)} {m} items" for m, x in fs.features.items()))
