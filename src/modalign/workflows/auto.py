"""`--method auto` (the default): a fixed, measured recipe with fallbacks; weights chosen only on a large
validation split.

    model, info = fit_method("auto", towers, train, val, cfg, encoders=encoders, store=store)
    info["choice"], info["reasons"]         # "bridge+kcca", ["effnet-lite0 has an ImageNet-1k head: ..."]

The recipe (BENCHMARKS.md, "A default that wins", has the numbers behind each step):
  1. image encoder with a classifier head + a text tower   -> label bridge (+) kernel CCA, equal weights
  2. no head (or no text tower, or a non-final image layer) -> kernel CCA alone
  3. more than `kcca.n_landmarks` pairs                    -> kernel CCA on that many Nystrom landmarks
  4. more than `kcca_max_pairs` pairs                      -> kernel CCA fitted on a random subset of them
  5. at least `mlp_min_pairs` pairs                         -> the trained InfoNCE MLP joins the ensemble
  6. not exactly two towers                                 -> the trained MLP (closed forms align two)
  7. at least `select_min_val` validation pairs             -> each part's weight (0 drops it) chosen on
                                                               validation from `weight_grid`
  8. else, one part far below the other on validation       -> the other part alone: the bridge where the
     (under `part_min_val_ratio` of its mean R@1)               head's classes do not describe the images
                                                                (icons), kernel CCA on a few dozen pairs
Choosing among methods on a small validation split picks the test-best one only about a third of the
time (issue "Quality, measured further": 65 validation stamps), so with a small validation split auto does
not pick the max on it: validation reports each part's recall (logged and saved in the run folder) and
only removes a part that is broken there by a wide margin (step 8, with at least `guard_min_val` items).
With thousands of validation pairs (step 7, the large data sets) the weights are chosen there: BENCHMARKS.md
shows how often that choice matched the test-best one. The test split is never seen.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from modalign.align.ensemble import select_weights, weight_label
from modalign.align.features import FeatureSet
from modalign.align.kernel_cca import KernelCCAConfig
from modalign.align.label_bridge import BridgeConfig
from modalign.align.trainer import TrainConfig
from modalign.encoders.base import Encoder
from modalign.model import AlignedModel, TowerConfig
from modalign.utils.config import load_config
from modalign.workflows.closed_methods import (
    Maps,
    bridge_maps,
    ensemble_maps,
    kcca_maps,
    maps_of,
    modality_pair,
    model_from_maps,
    paired_rows,
    tower_encoder,
    val_recall,
    val_subset,
)
from modalign.workflows.methods import fit_method, register_method

if TYPE_CHECKING:
    from modalign.store import EmbeddingStore

logger = logging.getLogger(__name__)


DEFAULT_WEIGHTS = {"bridge": 1.0, "kcca": 1.0, "mlp": 1.0}


@dataclass
class AutoConfig:
    kcca: dict[str, Any] = field(default_factory=dict)  # KernelCCAConfig overrides (degree, reg, n_landmarks ...)
    bridge: dict[str, Any] = field(default_factory=dict)  # BridgeConfig overrides (temperature, template)
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))  # part -> ensemble weight
    use_bridge: bool = True  # False: kernel CCA alone even where a label head exists
    kcca_max_pairs: int = 200_000  # above this, kernel CCA is fitted on a random subset (fit cost O(P m^2))
    mlp_min_pairs: int | None = 1000  # from this many pairs on, the trained MLP joins the ensemble (None: never)
    select_min_val: int = 1000  # with this many validation pairs, the parts' weights are chosen on validation
    select_max_val: int = 5000  # validation is scored on at most this many groups (a seeded subset: cost)
    weight_grid: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0])  # per part; 0 drops it
    part_min_val_ratio: float = 0.5  # drop the bridge or kcca when its val mean R@1 < this x the other's (0: never)
    guard_min_val: int = 20  # the guard above judges only with at least this many validation images and texts

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> AutoConfig:
        return load_config(cls, dict(d or {}), what="auto method")




def plan(towers: Mapping[str, TowerConfig], n_pairs: int, cfg: AutoConfig,
         encoders: Mapping[str, Encoder] | None = None) -> tuple[list[str], list[str]]:
    """(parts, reasons): which maps auto fits for this model and data size, and why, in words."""
    a, b = modality_pair(towers)
    kcfg = load_config(KernelCCAConfig, cfg.kcca, what="kcca")
    parts, reasons = ["kcca"], []
    if not cfg.use_bridge:
        reasons.append("the label bridge is switched off (use_bridge = false)")
    elif b != "text":
        reasons.append(f"no text tower ({a}, {b}): no label bridge")
    else:
        enc = tower_encoder(towers, encoders, a)
        head = enc.label_head()
        if head is None:
            reasons.append(f"{enc.spec} has no classifier head: no label bridge")
        elif towers[a].layer != head.layer:
            reasons.append(f"the {a} tower reads layer {towers[a].layer!r}, the classifier head reads "
                           f"{head.layer!r}: no label bridge")
        else:
            parts = ["bridge", "kcca"]
            reasons.append(f"{enc.spec} has a {head.n_classes}-class head: label bridge (+) kernel CCA")
    fit_pairs = min(n_pairs, cfg.kcca_max_pairs)
    if n_pairs > cfg.kcca_max_pairs:
        reasons.append(f"{n_pairs} pairs > kcca_max_pairs {cfg.kcca_max_pairs}: kernel CCA fitted on a random "
                       f"{cfg.kcca_max_pairs} of them")
    if fit_pairs > kcfg.n_landmarks:
        reasons.append(f"kernel CCA approximated with {kcfg.n_landmarks} Nystrom landmarks ({fit_pairs} pairs)")
    else:
        reasons.append(f"exact kernel CCA ({fit_pairs} pairs <= {kcfg.n_landmarks} landmarks)")
    if cfg.mlp_min_pairs is not None and n_pairs >= cfg.mlp_min_pairs:
        parts.append("mlp")
        reasons.append(f"{n_pairs} pairs >= mlp_min_pairs {cfg.mlp_min_pairs}: the trained MLP joins the ensemble")
    return parts, reasons


def fit_auto(towers: Mapping[str, TowerConfig], train: FeatureSet, val: FeatureSet | None, cfg: TrainConfig,
             options: Mapping[str, Any] | None = None, encoders: Mapping[str, Encoder] | None = None,
             store: EmbeddingStore | None = None, **kwargs: Any) -> tuple[AlignedModel, dict[str, Any]]:
    """The auto recipe (module docstring). Fits on `train`; reads `val` to report, to guard (step 8) and, when
    it holds `select_min_val` pairs, to choose the weights (step 7); never a test split."""
    acfg = AutoConfig.from_dict(options)
    if len(towers) != 2:
        reason = f"{len(towers)} towers ({', '.join(towers)}): closed forms align two, so the trained MLP"
        logger.info("auto: %s", reason)
        model, info = fit_method("mlp", dict(towers), train, val, cfg, **kwargs)
        model.metadata["auto"] = {"choice": "mlp", "reasons": [reason]}
        return model, {**info, "choice": "mlp", "reasons": [reason]}
    a, b = modality_pair(towers)
    n_pairs = len(paired_rows(train, a, b)[0])
    parts, reasons = plan(towers, n_pairs, acfg, encoders)
    for r in reasons:
        logger.info("auto: %s", r)
    fitted, extra = _fit_parts(parts, towers, train, val, cfg, acfg, encoders, store, **kwargs)
    val = val_subset(val, acfg.select_max_val) if val is not None else None
    weights, why, weight_scores, val_scores = _weights(parts, fitted, val, a, b, acfg)
    reasons += why
    for r in why:
        logger.info("auto: %s", r)
    kept = list(weights)
    maps = fitted[kept[0]] if len(kept) == 1 else ensemble_maps([fitted[p] for p in kept], list(weights.values()))
    choice = "+".join(kept)
    if len(kept) > 1 and choice not in val_scores:
        val_scores[choice] = val_recall(maps, val, a, b)
    info = {"choice": choice, "weights": weights, "reasons": reasons, "n_pairs": n_pairs, "config": asdict(acfg),
            "val_mean_recall@1": val_scores, **({"weight_scores": weight_scores} if weight_scores else {})}
    if val is not None:
        logger.info("auto: validation mean R@1: %s",
                    ", ".join(f"{k} {v:.3f}" for k, v in val_scores.items() if v is not None))
    return model_from_maps(towers, maps, {"method": "auto", "auto": info}), {**info, **extra}


def _weights(parts: list[str], fitted: Mapping[str, Maps], val: FeatureSet | None, a: str, b: str,
             acfg: AutoConfig) -> tuple[dict[str, float], list[str], dict[str, float], dict[str, float | None]]:
    """({part: weight} of the parts kept, why, each weighting's validation score, the validation mean R@1 of
    each part (and of the chosen ensemble where it was scored)): step 7, else 8."""
    n_val = 0 if val is None else len(val.all_pairs(a, b)[0])  # (image, caption) pairs, as n_pairs counts
    if len(parts) > 1 and val is not None and n_val >= acfg.select_min_val:
        outputs = {m: [fitted[p][m].project(val.features[m]).float() for p in parts] for m in (a, b)}
        best, scores = select_weights(outputs[a], outputs[b], val.groups[a], val.groups[b], acfg.weight_grid)
        weights = {p: w for p, w in zip(parts, best, strict=True) if w > 0}
        # each part alone is one of the weightings scored: no second pass over validation
        alone = {p: weight_label([1.0 if q == p else 0.0 for q in parts]) for p in parts}  # absent without 0
        val_scores: dict[str, float | None] = {
            p: scores[alone[p]] if alone[p] in scores else val_recall(fitted[p], val, a, b) for p in parts}
        val_scores["+".join(weights)] = scores[weight_label(best)]
        why = (f"weights chosen on {n_val} validation pairs ({len(scores)} weightings of {', '.join(parts)}): "
               + ", ".join(f"{p} {w:g}" for p, w in weights.items())
               + f" (validation mean R@1 {scores[weight_label(best)]:.3f})")
        return weights, [why], scores, val_scores
    val_scores = {name: val_recall(m, val, a, b) for name, m in fitted.items()}
    weights = {p: acfg.weights.get(p, 1.0) for p in parts}
    weak = _weak_part(val_scores, val, a, b, acfg)
    if weak:
        weights.pop(weak[0])
        return weights, [weak[1]], {}, val_scores
    said = ["weights " + ", ".join(f"{p} {w:g}" for p, w in weights.items())] if len(weights) > 1 else []
    return weights, said, {}, val_scores


def _weak_part(val_scores: Mapping[str, float | None], val: FeatureSet | None, a: str, b: str,
               acfg: AutoConfig) -> tuple[str, str] | None:
    """(part to drop, why) by step 8 of the recipe, or None to keep both. A guard against a broken part,
    not a choice between close ones: it needs a wide margin and enough validation items to trust it."""
    vb, vk = val_scores.get("bridge"), val_scores.get("kcca")
    if vb is None or vk is None or val is None or acfg.part_min_val_ratio <= 0:
        return None
    if min(len(val.features[a]), len(val.features[b])) < acfg.guard_min_val:
        return None
    ratio = acfg.part_min_val_ratio
    if vb < ratio * vk:
        return "bridge", (f"label bridge dropped: validation mean R@1 {vb:.3f} < {ratio:g} x kernel CCA's {vk:.3f} "
                          "(the head's classes do not describe these images): kernel CCA alone")
    if vk < ratio * vb:
        return "kcca", (f"kernel CCA dropped: validation mean R@1 {vk:.3f} < {ratio:g} x the label bridge's "
                        f"{vb:.3f} (too few pairs to fit it): the label bridge alone")
    return None


def _fit_parts(parts: list[str], towers: Mapping[str, TowerConfig], train: FeatureSet, val: FeatureSet | None,
               cfg: TrainConfig, acfg: AutoConfig, encoders: Mapping[str, Encoder] | None,
               store: EmbeddingStore | None, **kwargs: Any) -> tuple[dict[str, Maps], dict[str, Any]]:
    """Each part's fitted maps; `extra` carries a trained part's TrainResult (its epochs go to metrics.jsonl)."""
    a, b = modality_pair(towers)
    fitted: dict[str, Maps] = {}
    extra: dict[str, Any] = {}
    for part in parts:
        if part == "kcca":
            fitted[part] = kcca_maps(train, a, b, load_config(KernelCCAConfig, acfg.kcca, what="kcca"),
                                     acfg.kcca_max_pairs)
        elif part == "bridge":
            bcfg = load_config(BridgeConfig, acfg.bridge, what="bridge")
            fitted[part] = bridge_maps(towers, train, a, b, bcfg, encoders, store)
        else:  # "mlp": trained as the mlp method is, then used as one more space
            model, extra = fit_method("mlp", dict(towers), train, val, cfg, **kwargs)
            fitted[part] = maps_of(model)
    return fitted, extra


register_method("auto", "the default: label bridge (+) kernel CCA where the image encoder has a classifier head, "
                "else kernel CCA; from 1,000 pairs the trained MLP joins, weights chosen on a large validation "
                "split (see modalign.workflows.auto)")(fit_auto)
