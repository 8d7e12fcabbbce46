"""Progressive alignment (OneEncoder-style): add a modality to an aligned model without touching it.

    model = AlignedModel.from_pretrained("runs/tux")                     # image + text, already aligned
    bigger = align_new_modality(model, load_dataset("tuxpaint-sounds"), store,
                                modality="audio", encoder="logmel", anchors=("text",))
    bigger.save_pretrained("runs/tux-audio")                             # three towers

The existing towers are frozen (weights, input statistics and the temperature stay bit for bit as they
were): only a new projector for `modality` trains, with the configured loss (InfoNCE by default)
between its projected features and the FROZEN projected embeddings of the anchor modalities ("text",
"image" or both: a pairwise loss then averages over every pair, the frozen anchor pair adding a
constant; `symile` scores the triple). Image-text results of the model are unchanged by construction.
The split follows the base model's own split (its group names) when given, so no test item of the
base model is trained on; otherwise the data set is split by group with `split_seed`. Only groups that
have an item of the new modality are used (for training and for the held-out metrics).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from modalign.align.features import FeatureSet
from modalign.align.trainer import TrainConfig, evaluate_features, train
from modalign.data.column import AlignedDataset
from modalign.encoders.base import FINAL_LAYER, Encoder
from modalign.errors import ConfigError
from modalign.features.pipeline import encode_dataset, feature_set
from modalign.model import AlignedModel, TowerConfig
from modalign.utils.config import load_config
from modalign.utils.seeding import seed_everything

if TYPE_CHECKING:
    from modalign.store import EmbeddingStore

logger = logging.getLogger(__name__)


@dataclass
class ExtendConfig:
    layer: str | list[str] = FINAL_LAYER  # layer(s) of the new modality's encoder the projector reads
    split: dict[str, float] = field(default_factory=lambda: {"train": 0.7, "val": 0.1, "test": 0.2})  # when the
    #                                                    base model's split is not given
    split_seed: int = 0
    store_dtype: str = "float32"
    encode_batch_size: int = 16
    device: str = "cpu"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=200, batch_size=64, patience=30))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExtendConfig:
        return load_config(cls, d, what="extend")  # nested defaults: this class's own (200 epochs ...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_by_names(dataset: AlignedDataset, names: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """A split given as group names (a run's split.json) -> group indices of `dataset`; unnamed groups train."""
    index = {n: i for i, n in enumerate(dataset.group_names)}
    out = {k: np.sort(np.asarray([index[n] for n in v if n in index], dtype=np.int64)) for k, v in names.items()}
    named = np.concatenate(list(out.values())) if out else np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(dataset.n_groups), named)
    if len(rest):
        logger.info("%d groups are not in the base model's split; they go to train", len(rest))
        out["train"] = np.union1d(out.get("train", np.zeros(0, np.int64)), rest)
    return out


def extended_model(model: AlignedModel, tower: TowerConfig) -> AlignedModel:
    """A copy of `model` with one more (untrained) tower; the old towers' weights are copied exactly."""
    towers = {**model.towers, tower.modality: tower}
    bigger = AlignedModel(towers, metadata=copy.deepcopy(model.metadata))
    state = {k: v for k, v in model.state_dict().items()}
    missing, unexpected = bigger.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(f"projectors.{tower.modality}.") for k in missing):
        raise ConfigError(f"could not copy the base model's weights: missing {missing}, unexpected {unexpected}")
    for m, enc in model._encoders.items():
        bigger._encoders[m] = enc
    return bigger.to(model.logit_scale.device)


def _check_request(model: AlignedModel, dataset: AlignedDataset, modality: str, anchors: list[str]) -> None:
    """A new tower, frozen anchors the model has, and data holding every column involved."""
    if modality in model.towers:
        raise ConfigError(f"the model already has a {modality!r} tower; train a new model or pick another modality")
    if not anchors or set(anchors) - set(model.towers):
        raise ConfigError(f"anchors {anchors} must be towers of the model: {', '.join(model.towers)}")
    missing = [m for m in [modality, *anchors] if m not in dataset.columns]
    if missing:
        raise ConfigError(f"data set {dataset.name!r} has no {missing} column(s); it has {dataset.modalities}")


def align_new_modality(model: AlignedModel, dataset: AlignedDataset, store: EmbeddingStore, modality: str = "audio",
                       encoder: str | Encoder = "logmel", anchors: Sequence[str] = ("text",),
                       config: ExtendConfig | None = None, split: Mapping[str, np.ndarray] | None = None,
                       progress: bool = True) -> AlignedModel:
    """Trains a projector for `modality` against the frozen towers `anchors`; returns the bigger model.

    `split`: split name -> group indices of `dataset` (e.g. split_by_names of the base run's split.json);
    default: dataset.split(config.split, config.split_seed). Test metrics (each pair of the new modality
    with every other modality of the data set, pairwise_retrieval_metrics names) land in
    metadata["extend"]["test_metrics"].
    """
    from modalign.encoders.registry import create_encoder
    from modalign.workflows.fit import tower_config

    anchors = list(anchors)
    _check_request(model, dataset, modality, anchors)
    needed = [modality, *anchors]
    cfg = _checked_loss(config or ExtendConfig(), modality, anchors)
    enc = create_encoder(encoder, device=cfg.device) if isinstance(encoder, str) else encoder
    others = [m for m in model.towers if m in dataset.columns]  # every frozen tower the data can evaluate
    encoders = {m: model.encoder(m) for m in others}
    encoders[modality] = enc
    layers = {**{m: model.towers[m].layer for m in others}, modality: cfg.layer}
    stored = encode_dataset(dataset, encoders, store, layers, dtype=cfg.store_dtype,
                            batch_size=cfg.encode_batch_size, progress=progress)

    split = dict(split) if split is not None else dataset.split(cfg.split, seed=cfg.split_seed)
    # only groups with an item of the new modality: training needs them, and evaluation then ranks among them
    split = {k: np.intersect1d(v, dataset.column(modality).groups) for k, v in split.items()}
    train_stored = {m: stored[m] for m in needed}
    parts = {k: feature_set(dataset, train_stored, v) for k, v in split.items() if len(v)}
    if "train" not in parts:
        raise ConfigError("the split has no training groups")
    tower = replace(tower_config(modality, enc, cfg.layer, "concat"),
                    projector=replace(cfg.train.projector, out_dim=model.embed_dim))
    seed_everything(cfg.train.seed)  # the new projector's initial weights depend on the seed
    bigger = extended_model(model, tower)
    logit_scale = model.logit_scale.detach().clone()
    train_cfg = replace(cfg.train, trainable=[modality], projector=tower.projector,
                        eval_pairs=[[modality, a] for a in anchors])
    evaluators = None
    if cfg.train.loss == "symile" and "val" in parts:
        val, names = parts["val"], [modality, *anchors]
        evaluators = {"symile": lambda m: symile_metrics(m, val, names)}
        if not train_cfg.loss_options.get("pairwise_weight"):  # symile alone: keep the best MIP retrieval
            train_cfg = replace(train_cfg, monitor=f"symile_{modality}_given_{anchors[0]}+{anchors[1]}_recall@5")
    result = train(bigger, parts["train"], parts.get("val"), train_cfg, progress=progress, evaluators=evaluators)
    with torch.no_grad():
        bigger.logit_scale.copy_(logit_scale)  # the temperature belongs to the frozen model
    test_fs = feature_set(dataset, stored, split["test"]) if len(split.get("test", [])) else parts.get("val")
    test_metrics = evaluate_new_modality(bigger, test_fs, modality) if test_fs is not None else {}
    if cfg.train.loss == "symile" and test_fs is not None:
        test_metrics.update(symile_metrics(bigger, test_fs, [modality, *anchors]))
    bigger.metadata["extend"] = {
        "modality": modality, "encoder": enc.spec, "anchors": anchors, "dataset": dataset.name,
        "best_epoch": result.best_epoch, "test_metrics": test_metrics, "config": cfg.to_dict(),
    }
    logger.info("%s tower aligned via %s in %.1fs (best epoch %d)", modality, "+".join(anchors),
                result.seconds, result.best_epoch)
    return bigger


def _checked_loss(cfg: ExtendConfig, modality: str, anchors: list[str]) -> ExtendConfig:
    """Symile needs two anchors; alone it does not train the cosine that retrieval and search use, so a
    pairwise InfoNCE term is added unless loss_options.pairwise_weight says otherwise."""
    if cfg.train.loss != "symile":
        return cfg
    if len(anchors) != 2:
        raise ConfigError(f"the symile loss scores triples: give two anchors (e.g. --anchor text --anchor image), "
                          f"got {anchors}")
    if "pairwise_weight" in cfg.train.loss_options:
        if not cfg.train.loss_options["pairwise_weight"]:
            logger.warning("symile alone: the %s tower is trained for MIP scores of (%s, %s) triples only; "
                           "cosine retrieval, indexes and search with it will be near chance", modality, *anchors)
        return cfg
    logger.warning("symile trains the %s tower for MIP scores of (%s, %s) triples, not the cosine that retrieval, "
                   "indexes and search use: adding pairwise InfoNCE (loss_options.pairwise_weight = 1; set it to 0 "
                   "for Symile alone)", modality, *anchors)
    options = {**cfg.train.loss_options, "pairwise_weight": 1.0}
    return replace(cfg, train=replace(cfg.train, loss_options=options))


def symile_metrics(model: AlignedModel, data: FeatureSet, names: list[str]) -> dict[str, float]:
    """Symile's own retrieval on the groups holding all three modalities: names[0] ranked by the MIP with the
    other two (first item of each group per modality), e.g. audio_given_text+image_recall@1."""
    from modalign.align.symile import symile_retrieval_metrics

    common = np.intersect1d(data.groups[names[0]].numpy(), data.groups[names[1]].numpy())
    common = np.intersect1d(common, data.groups[names[2]].numpy())
    if len(common) < 2:
        return {}
    emb = []
    for m in names:
        g = data.groups[m].numpy()
        first = {int(x): i for i, x in reversed(list(enumerate(g)))}  # group -> its first row
        rows = [first[int(x)] for x in common]
        with torch.no_grad():
            emb.append(model.project(m, data.features[m][rows]))
    return symile_retrieval_metrics(emb[0], (emb[1], emb[2]), common, (names[0], names[1], names[2]))


def evaluate_new_modality(model: AlignedModel, data: FeatureSet, modality: str) -> dict[str, float]:
    """Pairwise retrieval of `modality` against every other modality of `data` the model has a tower for."""
    pairs = [(modality, o) for o in data.modalities if o != modality and o in model.towers]
    return evaluate_features(model, data, pairs) if pairs else {}
