"""Alignment methods behind one registry: trained projectors and closed-form baselines alike.

A method takes tower descriptions (encoder, layer, input dim) and cached training/validation features
and returns an AlignedModel plus a dict of facts about the fit.

    model, info = fit_method("mlp", towers, train, val, train_config)

Trained methods use the training config's loss (TrainConfig.loss: infonce by default, sigmoid,
structure, multi-positive) and differ in their projector head; they also take `on_epoch`, `progress`
and `evaluators` (see align.trainer.train). Closed-form methods ignore the training config.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from modalign.align.closed_form import fit_cca, fit_procrustes, fit_ridge
from modalign.align.features import FeatureSet
from modalign.align.trainer import TrainConfig, train
from modalign.errors import ConfigError
from modalign.utils.seeding import seed_everything

logger = logging.getLogger(__name__)

MethodFn = Callable[..., tuple[Any, dict[str, Any]]]
_METHODS: dict[str, tuple[MethodFn, str]] = {}


def register_method(name: str, description: str) -> Callable[[MethodFn], MethodFn]:
    def wrap(fn: MethodFn) -> MethodFn:
        if name in _METHODS:
            logger.warning("alignment method %r registered twice; the later registration wins", name)
        _METHODS[name] = (fn, description)
        return fn

    return wrap


def _register_builtin() -> None:
    """The closed-form methods built from align's maps (kcca, asif, bridge ...) and `auto` register
    themselves where their models are assembled; imported on first use."""
    import modalign.workflows.auto  # noqa: F401


def list_methods() -> dict[str, str]:
    _register_builtin()
    return {name: desc for name, (_, desc) in sorted(_METHODS.items())}


def fit_method(name: str, towers: dict, train_data: FeatureSet, val_data: FeatureSet | None,
               cfg: TrainConfig, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    _register_builtin()
    if name not in _METHODS:
        raise ConfigError(f"unknown alignment method {name!r}; known: {', '.join(sorted(_METHODS))}")
    model, info = _METHODS[name][0](towers, train_data, val_data, cfg, **kwargs)
    model.metadata.setdefault("method", name)
    return model, info


def _trained(projector_type: str | None) -> MethodFn:
    def fit(towers: dict, train_data: FeatureSet, val_data: FeatureSet | None, cfg: TrainConfig,
            on_epoch=None, progress: bool = True, evaluators=None, **_: Any) -> tuple[Any, dict[str, Any]]:
        from modalign.model import AlignedModel

        proj = cfg.projector if projector_type is None else replace(cfg.projector, type=projector_type)
        seed_everything(cfg.seed)  # the initial weights depend on the seed too
        model = AlignedModel({m: replace(t, projector=proj) for m, t in towers.items()})
        result = train(model, train_data, val_data, replace(cfg, projector=proj), on_epoch=on_epoch,
                       progress=progress, evaluators=evaluators)
        return model, {"result": result, "train_config": replace(cfg, projector=proj)}

    return fit


register_method("trained", "projectors as set in the training config, trained with its loss")(_trained(None))
register_method("mlp", "MLP projectors trained with the config's loss (symmetric InfoNCE by default)")(_trained("mlp"))
register_method("linear", "linear projectors trained with the config's loss")(_trained("linear"))
register_method("lowrank", "linear map + low-rank nonlinear residual, trained with the config's loss")(
    _trained("lowrank"))
register_method("star", "SAIL-style gated 'star' MLP heads, trained with the config's loss")(_trained("star"))


@register_method("ridge", "closed form: ridge regression from image to text features")
def _ridge(towers, train_data, val_data, cfg, **_):
    return fit_ridge(towers, train_data, val_data)


@register_method("procrustes", "closed form: PCA + orthogonal Procrustes rotation")
def _procrustes(towers, train_data, val_data, cfg, **_):
    return fit_procrustes(towers, train_data, val_data)


@register_method("cca", "closed form: regularised CCA, both sides projected to the top canonical directions")
def _cca(towers, train_data, val_data, cfg, **_):
    return fit_cca(towers, train_data, val_data)
