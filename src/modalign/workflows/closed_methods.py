"""Closed-form methods assembled from align/'s maps into AlignedModels: kcca, asif, bridge, ensembles.

    model, info = fit_method("kcca", towers, train, val, cfg)                       # kernel CCA
    model, info = fit_method("bridge", towers, train, val, cfg, encoders=encoders)  # label bridge
    model, info = fit_method("bridge+kcca", towers, train, val, cfg)                # the two, one space

Every method returns an ordinary AlignedModel whose towers hold registered projectors (kernel,
relative, label-bridge, centre, ensemble), so it saves, reloads, indexes and serves like a trained one.
Settings come as `options` (FitConfig.method_options), checked against each method's config dataclass.
The label bridge needs the image encoder's classifier head and the text encoder (for the class-name
prompts): pass `encoders` (modality -> Encoder) to reuse loaded ones, else they are created from the
towers' specs; pass `store` to cache the prompts' text features.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from modalign.align.ensemble import EnsembleMap, FeatureMap, ModuleMap, load_feature_map
from modalign.align.features import FeatureSet
from modalign.align.kernel_cca import KernelCCAConfig, fit_kernel_cca
from modalign.align.label_bridge import BridgeConfig, bridge_prompts, fit_label_bridge
from modalign.align.relative import RelativeConfig, fit_relative
from modalign.align.trainer import TrainConfig
from modalign.encoders.base import Encoder
from modalign.errors import ConfigError
from modalign.evaluate.retrieval import retrieval_metrics
from modalign.model import AlignedModel, TowerConfig
from modalign.utils.config import load_config
from modalign.workflows.methods import register_method

if TYPE_CHECKING:
    from modalign.store import EmbeddingStore

logger = logging.getLogger(__name__)

Maps = dict[str, FeatureMap]  # modality -> fitted map of that tower
Towers = Mapping[str, TowerConfig]
Options = Mapping[str, Any] | None  # FitConfig.method_options
Fitted = tuple[AlignedModel, dict[str, Any]]  # what a registered method returns


def modality_pair(towers: Towers) -> tuple[str, str]:
    """(image-like, text) modalities of a two-tower model: closed forms align exactly two towers."""
    if len(towers) != 2:
        raise ConfigError(f"closed-form methods align exactly two towers; this model has {list(towers)}: "
                          "use a trained method (mlp) for more")
    a, b = sorted(towers, key=lambda m: m == "text")  # text second when present
    return a, b


def paired_rows(data: FeatureSet, a: str, b: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of every positive (a, b) pair of `data`: (P, d_a), (P, d_b)."""
    ia, ib = data.all_pairs(a, b)
    if len(ia) < 3:
        raise ConfigError(f"closed-form methods need at least 3 positive pairs; the training split has {len(ia)}")
    return data.features[a][ia], data.features[b][ib]


def model_from_maps(towers: Towers, maps: Maps, metadata: dict[str, Any]) -> AlignedModel:
    """An AlignedModel whose towers hold the fitted maps (closed forms read one stacked feature matrix)."""
    configs = {m: replace(t, projector=maps[m].projector_config(), layer_mix="concat") for m, t in towers.items()}
    model = AlignedModel(configs, metadata=metadata)
    for m, fm in maps.items():
        load_feature_map(model.projectors[m], fm)
    return model


def maps_of(model: AlignedModel) -> Maps:
    """A fitted model's towers as ensemble parts (e.g. a Procrustes or trained model beside a kernel map)."""
    return {m: ModuleMap(model.projectors[m], t.projector) for m, t in model.towers.items()}


@torch.no_grad()
def val_recall(maps: Maps, val: FeatureSet | None, a: str, b: str) -> float | None:
    """Validation mean recall@1 of fitted maps (None without a validation split)."""
    if val is None or not len(val.features[a]) or not len(val.features[b]):
        return None
    ea, eb = maps[a].project(val.features[a]).float(), maps[b].project(val.features[b]).float()
    return retrieval_metrics(ea, eb, val.groups[a].numpy(), val.groups[b].numpy())["mean_recall@1"]


def val_subset(val: FeatureSet, max_groups: int, seed: int = 0) -> FeatureSet:
    """At most `max_groups` groups of `val` (a seeded random choice, all their items): scoring a validation
    split costs O(n^2), so a 100k-pair one is judged on a subset."""
    groups = val.shared_groups().numpy()
    if len(groups) <= max_groups:
        return val
    return val.take_groups(np.random.default_rng(seed).choice(groups, max_groups, replace=False))


# ---- the parts ---------------------------------------------------------------------------------------
def kcca_maps(train: FeatureSet, a: str, b: str, cfg: KernelCCAConfig, max_pairs: int | None = None) -> Maps:
    """Kernel CCA maps; above `max_pairs` pairs the fit reads a seeded random subset of them."""
    x, y = paired_rows(train, a, b)
    if max_pairs is not None and len(x) > max_pairs:
        logger.info("kernel CCA: fitting on a random %d of the %d training pairs", max_pairs, len(x))
        rows = torch.from_numpy(np.sort(np.random.default_rng(cfg.seed).choice(len(x), max_pairs, replace=False)))
        x, y = x[rows], y[rows]
    ma, mb, _ = fit_kernel_cca(x, y, cfg)
    return {a: ma, b: mb}


def asif_maps(train: FeatureSet, a: str, b: str, cfg: RelativeConfig) -> Maps:
    x, y = paired_rows(train, a, b)
    ma, mb = fit_relative(x, y, cfg)
    return {a: ma, b: mb}


def tower_encoder(towers: Towers, encoders: Mapping[str, Encoder] | None, m: str) -> Encoder:
    if encoders and m in encoders:
        return encoders[m]
    from modalign.encoders.registry import create_encoder

    return create_encoder(towers[m].encoder)


def bridge_maps(towers: Towers, train: FeatureSet, a: str, b: str, cfg: BridgeConfig,
                encoders: Mapping[str, Encoder] | None = None, store: EmbeddingStore | None = None) -> Maps:
    """Label-bridge maps; ConfigError (saying what to use instead) when the `a` encoder has no head."""
    image_enc = tower_encoder(towers, encoders, a)
    head = image_enc.label_head()
    if head is None:
        raise ConfigError(
            f"the label bridge needs an image encoder with a classifier head (ImageNet logits); {image_enc.spec!r} "
            "has none. Use an ImageNet-supervised encoder (effnet-lite0, effnet-lite2, an ImageNet timm "
            "classifier), or a method without the bridge: --method kcca")
    if b != "text" or towers[a].layer != head.layer:
        raise ConfigError(f"the label bridge reads the {a} tower's {head.layer!r} features and maps them into the "
                          f"text tower's space; this model has towers {a} (layer {towers[a].layer!r}) and {b}")
    text_enc = tower_encoder(towers, encoders, b)
    prompts = bridge_prompts(head.classnames, cfg.template)
    class_text = prompt_features(text_enc, prompts, towers[b].layer, store)  # (C, d_text)
    x, y = train.features[a], train.features[b]
    ma, mb = fit_label_bridge(head, class_text, x, y, cfg)
    return {a: ma, b: mb}


def prompt_features(encoder: Encoder, prompts: list[str], layer: str | list[str],
                    store: EmbeddingStore | None = None) -> torch.Tensor:
    """(len(prompts), d) text features of prompts at `layer`, through the store when one is given."""
    if store is None:
        from modalign.encoders.layers import encode_layers

        return torch.from_numpy(encode_layers(encoder, prompts, layer))
    from modalign.data.column import Column
    from modalign.features.pipeline import encode_column

    column = Column("text", [f"prompt/{i}" for i in range(len(prompts))], prompts, np.arange(len(prompts)))
    entry = encode_column(store, column, encoder, layer, progress=False)
    if not np.all(entry.valid):
        raise ConfigError(f"{int((~np.asarray(entry.valid)).sum())} label-bridge prompts could not be encoded")
    return torch.from_numpy(np.asarray(entry.vectors(np.arange(len(prompts))), dtype=np.float32))


def ensemble_maps(parts: list[Maps], weights: list[float]) -> Maps:
    """Per-part maps -> one ensemble map per modality (the parts' spaces concatenated)."""
    return {m: EnsembleMap([p[m] for p in parts], list(weights)) for m in parts[0]}


# ---- registered methods ------------------------------------------------------------------------------
@dataclass
class ClosedFormOptions:
    """method_options of kcca / asif / bridge / bridge+kcca (each reads its own table)."""

    kcca: dict[str, Any] = field(default_factory=dict)  # KernelCCAConfig fields
    asif: dict[str, Any] = field(default_factory=dict)  # RelativeConfig fields, plus "grid": false
    bridge: dict[str, Any] = field(default_factory=dict)  # BridgeConfig fields
    weights: list[float] = field(default_factory=lambda: [1.0, 1.0])  # bridge+kcca: bridge, kcca

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> ClosedFormOptions:
        return load_config(cls, dict(d or {}), what="closed-form method")


def _kcca_cfg(opts: ClosedFormOptions) -> KernelCCAConfig:
    return load_config(KernelCCAConfig, opts.kcca, what="kcca")


def _finish(towers: Towers, maps: Maps, name: str, val: FeatureSet | None, a: str, b: str,
            info: dict[str, Any]) -> tuple[AlignedModel, dict[str, Any]]:
    score = val_recall(maps, val, a, b)
    info = {**info, "val_mean_recall@1": score}
    logger.info("%s: %s", name, ", ".join(f"{k}={v}" for k, v in info.items() if not isinstance(v, dict)))
    return model_from_maps(towers, maps, {"method": name, name: info}), info


def fit_kcca(towers: Towers, train: FeatureSet, val: FeatureSet | None, cfg: TrainConfig,
             options: Options = None, **_: Any) -> Fitted:
    a, b = modality_pair(towers)
    kcfg = _kcca_cfg(ClosedFormOptions.from_dict(options))
    return _finish(towers, kcca_maps(train, a, b, kcfg), "kcca", val, a, b, {"kcca": asdict(kcfg)})


ASIF_TOPK, ASIF_POWER = (64, 256, 800), (1.0, 3.0, 8.0)  # the grid picked from on the validation split


def fit_asif(towers: Towers, train: FeatureSet, val: FeatureSet | None, cfg: TrainConfig,
             options: Options = None, **_: Any) -> Fitted:
    """ASIF: top-k and power picked on the validation split from ASIF_TOPK x ASIF_POWER (a baseline may use it)."""
    a, b = modality_pair(towers)
    raw: dict[str, Any] = dict(ClosedFormOptions.from_dict(options).asif)
    grid = raw.pop("grid", True)
    base = load_config(RelativeConfig, raw, what="asif")
    candidates = [base]
    if grid and val is not None:
        candidates = [replace(base, topk=k, power=p) for k in ASIF_TOPK for p in ASIF_POWER]
    scored = [(val_recall(maps, val, a, b) or 0.0, i, maps, c)
              for i, c in enumerate(candidates) for maps in [asif_maps(train, a, b, c)]]
    _score, _index, maps, best = max(scored, key=lambda t: (t[0], -t[1]))
    return _finish(towers, maps, "asif", val, a, b, {"asif": asdict(best)})


def fit_bridge(towers: Towers, train: FeatureSet, val: FeatureSet | None, cfg: TrainConfig, options: Options = None,
               encoders: Mapping[str, Encoder] | None = None, store: EmbeddingStore | None = None,
               **_: Any) -> Fitted:
    a, b = modality_pair(towers)
    bcfg = load_config(BridgeConfig, ClosedFormOptions.from_dict(options).bridge, what="bridge")
    maps = bridge_maps(towers, train, a, b, bcfg, encoders, store)
    return _finish(towers, maps, "bridge", val, a, b, {"bridge": asdict(bcfg)})


def fit_bridge_kcca(towers: Towers, train: FeatureSet, val: FeatureSet | None, cfg: TrainConfig,
                    options: Options = None,
                    encoders: Mapping[str, Encoder] | None = None, store: EmbeddingStore | None = None,
                    **_: Any) -> Fitted:
    a, b = modality_pair(towers)
    opts = ClosedFormOptions.from_dict(options)
    bcfg, kcfg = load_config(BridgeConfig, opts.bridge, what="bridge"), _kcca_cfg(opts)
    parts = [bridge_maps(towers, train, a, b, bcfg, encoders, store), kcca_maps(train, a, b, kcfg)]
    maps = ensemble_maps(parts, opts.weights)
    return _finish(towers, maps, "bridge+kcca", val, a, b,
                   {"bridge": asdict(bcfg), "kcca": asdict(kcfg), "weights": opts.weights})


register_method("kcca", "closed form: polynomial kernel CCA (Nystrom landmarks above n_landmarks pairs)")(fit_kcca)
register_method("asif", "closed form: ASIF relative representations (top-k, power picked on validation)")(fit_asif)
register_method("bridge", "closed form: label bridge, the image encoder's classifier head read in text space")(
    fit_bridge)
register_method("bridge+kcca", "closed form: label bridge (+) kernel CCA in one space")(fit_bridge_kcca)


# ---- a trained head that starts from a closed-form map -------------------------------------------------
@dataclass
class FinetuneOptions:
    init: str = "procrustes"  # the closed-form start: procrustes | cca | ridge (linear maps)
    head: str = "lowrank"  # linear | lowrank (the linear map plus a rank-r GELU residual that starts at 0)
    rank: int = 64  # lowrank: width of the residual

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> FinetuneOptions:
        return load_config(cls, dict(d or {}), what="finetune method")


def fit_finetune(towers: Towers, train: FeatureSet, val: FeatureSet | None, cfg: TrainConfig, options: Options = None,
                 on_epoch: Callable[[dict[str, float]], None] | None = None, progress: bool = True,
                 **_: Any) -> Fitted:
    """A closed-form linear map as the starting point of a trained head (InfoNCE by default)."""
    from modalign.align.projectors import ProjectorConfig
    from modalign.align.trainer import train as train_heads
    from modalign.workflows.methods import fit_method

    opts = FinetuneOptions.from_dict(options)
    if opts.init not in ("procrustes", "cca", "ridge") or opts.head not in ("linear", "lowrank"):
        raise ConfigError(f"finetune starts a linear or lowrank head from procrustes, cca or ridge (got {opts})")
    start, _ = fit_method(opts.init, dict(towers), train, val, cfg)
    # no input statistics or norm: the head's linear layer is exactly the closed-form map at the start
    proj = ProjectorConfig(type=opts.head, out_dim=start.embed_dim, rank=opts.rank, dropout=cfg.projector.dropout,
                           input_norm=False, standardize=False)
    model = AlignedModel({m: replace(t, projector=proj, layer_mix="concat") for m, t in towers.items()},
                         metadata={"method": "finetune", "finetune": asdict(opts)})
    for m in towers:
        model.projectors[m].get_submodule("linear").load_state_dict(start.projectors[m].get_submodule("linear").state_dict())
    result = train_heads(model, train, val, replace(cfg, projector=proj), on_epoch=on_epoch, progress=progress)
    return model, {"result": result, "train_config": replace(cfg, projector=proj), "finetune": asdict(opts)}


register_method("finetune", "a linear or lowrank head started from a closed-form map (procrustes by default), "
                "then trained with the config's loss")(fit_finetune)
