"""Alignment methods behind one registry: trained projectors and closed-form baselines alike.

A method takes tower descriptions (encoder, layer, input dim) and cached training/validation features
and returns an AlignedModel plus a dict of facts about the fit. The maps themselves come from
modalign.align (which sees embeddings only); this module assembles them into models.

    model, info = fit_method("mlp", towers, train, val, train_config)

Trained methods use the training config's loss (TrainConfig.loss: infonce by default, sigmoid,
structure, multi-positive) and differ in their projector head; they also take `on_epoch`, `progress`
and `evaluators` (see align.trainer.train). Closed-form methods ignore the training config.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

import torch
from torch import nn

from modalign.align.closed_form import ClosedFormFit, fit_cca, fit_procrustes, fit_ridge
from modalign.align.features import FeatureSet
from modalign.align.projectors import ProjectorConfig
from modalign.align.trainer import TrainConfig, check_finite_features, train
from modalign.model import AlignedModel, TowerConfig
from modalign.utils.registry import Registry
from modalign.utils.seeding import seed_everything

logger = logging.getLogger(__name__)

Towers = dict[str, TowerConfig]  # modality -> tower description


# (towers, train features, val features or None, training config, **context) -> (model, facts about the fit);
# methods take extra keyword context of their own (on_epoch, options, encoders, store ...)
MethodFn = Callable[..., tuple[AlignedModel, dict[str, Any]]]


# kcca, asif, bridge, bridge+kcca, finetune and the default `auto` register in their own modules
METHODS: Registry[MethodFn] = Registry("alignment method",
                                       plugins=["modalign.workflows.closed_methods", "modalign.workflows.auto"])


def register_method(name: str, description: str) -> Callable[[MethodFn], MethodFn]:
    return METHODS.register(name, description=description)


def list_methods(pattern: str | None = None) -> list[str]:
    return METHODS.list(pattern)


def fit_method(name: str, towers: Towers, train_data: FeatureSet, val_data: FeatureSet | None,
               cfg: TrainConfig, **kwargs: Any) -> tuple[AlignedModel, dict[str, Any]]:
    method = METHODS.get(name)
    check_finite_features(train_data, "training")  # closed forms too: NaN in, NaN weights out
    if val_data is not None:
        check_finite_features(val_data, "validation")
    model, info = method(towers, train_data, val_data, cfg, **kwargs)
    model.metadata.setdefault("method", name)
    return model, info


def linear_model(towers: Towers, fit: ClosedFormFit, method: str) -> AlignedModel:
    """An AlignedModel whose towers are the closed-form affine maps (centring lives in the bias)."""
    out_dim = {m.out_dim for m in fit.maps.values()}
    if len(out_dim) != 1:
        raise ValueError(f"closed-form maps of one model must share an output width, got {sorted(out_dim)}")
    cfg = ProjectorConfig(type="linear", out_dim=out_dim.pop(), standardize=False)
    model = AlignedModel({m: replace(towers[m], projector=cfg) for m in fit.maps},
                         metadata={"method": method, **fit.info})
    with torch.no_grad():
        for modality, linear_map in fit.maps.items():
            lin = cast(nn.Linear, model.projectors[modality].linear)
            lin.weight.copy_(linear_map.weight.float())  # (out, in)
            lin.bias.copy_(linear_map.bias.float())  # (out,)
    return model


def _trained(projector_type: str | None) -> MethodFn:
    def fit(towers: Towers, train_data: FeatureSet, val_data: FeatureSet | None, cfg: TrainConfig,
            on_epoch: Callable[[dict[str, float]], None] | None = None, progress: bool = True,
            evaluators: Any = None, **_: Any) -> tuple[AlignedModel, dict[str, Any]]:
        proj = cfg.projector if projector_type is None else replace(cfg.projector, type=projector_type)
        seed_everything(cfg.seed)  # the initial weights depend on the seed too
        model = AlignedModel({m: replace(t, projector=proj) for m, t in towers.items()})
        result = train(model, train_data, val_data, replace(cfg, projector=proj), on_epoch=on_epoch,
                       progress=progress, evaluators=evaluators)
        return model, {"result": result, "train_config": replace(cfg, projector=proj)}

    return fit


def _closed_form(method: str, fit_maps: Callable[[FeatureSet, FeatureSet | None], ClosedFormFit]) -> MethodFn:
    def fit(towers: Towers, train_data: FeatureSet, val_data: FeatureSet | None, cfg: TrainConfig,
            **_: Any) -> tuple[AlignedModel, dict[str, Any]]:
        maps = fit_maps(train_data, val_data)
        return linear_model(towers, maps, method), dict(maps.info)

    return fit


register_method("trained", "projectors as set in the training config, trained with its loss")(_trained(None))
register_method("mlp", "MLP projectors trained with the config's loss (symmetric InfoNCE by default)")(_trained("mlp"))
register_method("linear", "linear projectors trained with the config's loss")(_trained("linear"))
register_method("lowrank", "linear map + low-rank nonlinear residual, trained with the config's loss")(
    _trained("lowrank"))
register_method("star", "SAIL-style gated 'star' MLP heads, trained with the config's loss")(_trained("star"))
register_method("ridge", "closed form: ridge regression from image to text features")(
    _closed_form("ridge", fit_ridge))
register_method("procrustes", "closed form: PCA + orthogonal Procrustes rotation")(
    _closed_form("procrustes", fit_procrustes))
register_method("cca", "closed form: regularised CCA, both sides projected to the top canonical directions")(
    _closed_form("cca", fit_cca))
