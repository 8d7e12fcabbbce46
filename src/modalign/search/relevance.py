"""Calibrated relevance and adaptive top-k: how many hits a query deserves, not a fixed k.

    cal = fit_calibration(query_emb, item_emb, query_keys, item_keys, "text")    # held-out queries
    save_calibration(index.folder, cal, index.info.space)                       # INDEX/relevance.json
    cals = load_calibrations(index.folder, index.info.space)                    # {"text": cal, ...}
    n = cut(scores, cals["text"](scores), CutPolicy(min_relevance=0.5, adaptive_k=True, k_max=50))
    hits = apply_policy(index.search(q, k=policy.fetch)[0], cals.get("text"), policy)   # with .relevance

Calibration: a logistic map of the cosine score, P(relevant | s) = sigmoid(slope * s + intercept),
fitted by Newton's method on every (held-out query, item) pair labelled relevant (same key: the same
group for matched pairs, the same class for category membership) or not. The slope is kept >= 0, so
relevance never decreases with the score (a model whose scores anti-correlate with relevance gets a
flat map and a warning). It is fitted per query modality (text->image and image->image cosines live on
different scales) and stored beside the index with the hash of the embedding space it was fitted in; a
rebuilt index in another space ignores it. Probabilities carry the base rate of the data fitted on:
fit on queries and a collection like the ones searched.

Cut: from a query's candidates (scores sorted descending, at most k_max), keep
  - with `min_relevance` P: the leading hits whose relevance is >= P (a prefix, relevance being monotone);
  - with `adaptive_k`: of those, the ones before the largest gap s_i - s_{i+1} of the score curve
    (at least `k_min`; the first of equal gaps wins, so the cut is deterministic);
  - with neither: the first k.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modalign.errors import ConfigError, MismatchError

if TYPE_CHECKING:
    from modalign.search.index import Hit

logger = logging.getLogger(__name__)

RELEVANCE_NAME = "relevance.json"
FORMAT = "modalign.relevance"
MAX_PAIRS = 2_000_000  # (query, item) pairs used for a fit; negatives beyond it are subsampled and re-weighted


@dataclass(frozen=True)
class RelevanceCalibration:
    slope: float  # >= 0
    intercept: float
    query_modality: str  # "text" or "image": the queries it was fitted on
    relevant_by: str  # what counted as relevant: "pair" (same group) or "label" (same class)
    n_queries: int
    n_relevant: int  # relevant (query, item) pairs seen
    n_pairs: int  # all (query, item) pairs seen
    fitted_on: str = ""  # the data set spec, for the record

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """Relevance probabilities of cosine scores (any shape)."""
        z = self.slope * np.asarray(scores, dtype=np.float64) + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))

    def threshold(self, p: float) -> float:
        """The cosine at which relevance reaches p (inf when it never does, -inf when always)."""
        if not 0 < p < 1:
            raise ConfigError(f"a relevance threshold must lie in (0, 1); got {p}")
        logit = math.log(p / (1 - p))
        if self.slope == 0:
            return -math.inf if self.intercept >= logit else math.inf
        return (logit - self.intercept) / self.slope


def _newton_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, iters: int = 50) -> tuple[float, float]:
    """(slope, intercept) of a weighted 1-D logistic regression by Newton's method (a 2x2 system per step)."""
    a, b = 0.0, float(np.log((w * y).sum() / max((w * (1 - y)).sum(), 1e-12)))  # start at the base rate
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(a * x + b, -60, 60)))
        g = np.array([(w * (p - y) * x).sum(), (w * (p - y)).sum()])
        h = w * p * (1 - p)
        hess = np.array([[(h * x * x).sum(), (h * x).sum()], [(h * x).sum(), h.sum()]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, g)
        a, b = a - float(step[0]), b - float(step[1])
        if np.abs(step).max() < 1e-8:
            break
    return a, b


def fit_calibration(query_emb: np.ndarray, item_emb: np.ndarray, query_keys: np.ndarray, item_keys: np.ndarray,
                    query_modality: str, relevant_by: str = "label", exclude_same: np.ndarray | None = None,
                    fitted_on: str = "", seed: int = 0) -> RelevanceCalibration:
    """Fits P(relevant | cosine) on held-out queries. query_emb: (Q, D), item_emb: (I, D), normalised or not;
    query_keys: (Q,), item_keys: (I,): a pair is relevant when the keys are equal. exclude_same: (Q,) index of
    the item that IS the query (image->image over one collection), -1 for none: that pair is left out."""
    q = _unit(query_emb)
    it = _unit(item_emb)
    if q.shape[1] != it.shape[1]:
        raise MismatchError(f"queries are {q.shape[1]}-d but items {it.shape[1]}-d: embed both with one model")
    sims = q @ it.T  # (Q, I)
    rel = np.asarray(query_keys)[:, None] == np.asarray(item_keys)[None, :]  # (Q, I)
    keep = np.ones_like(rel)
    if exclude_same is not None:
        rows = np.flatnonzero(np.asarray(exclude_same) >= 0)
        keep[rows, np.asarray(exclude_same)[rows]] = False
    x, y = sims[keep].astype(np.float64), rel[keep].astype(np.float64)
    if y.sum() == 0 or y.sum() == len(y):
        raise ConfigError(f"calibration needs both relevant and irrelevant pairs; got {int(y.sum())} relevant of "
                          f"{len(y)}: check that the queries' keys match the items' keys")
    w = np.ones_like(x)
    n_neg = int(len(y) - y.sum())
    if len(y) > MAX_PAIRS:  # keep every positive, a seeded share of the negatives, weighted back up
        rate = max(1e-6, (MAX_PAIRS - y.sum()) / n_neg)
        pick = (y == 1) | (np.random.default_rng(seed).random(len(y)) < rate)
        x, y, w = x[pick], y[pick], np.where(y[pick] == 1, 1.0, 1.0 / rate)
    slope, intercept = _newton_logistic(x, y, w)
    if slope < 0:
        logger.warning("relevance falls with the score on this data (slope %.3g): the model does not rank "
                       "relevant items first here; using a flat calibration at the base rate", slope)
        base = (w * y).sum() / w.sum()
        slope, intercept = 0.0, float(np.log(base / (1 - base)))
    n_rel = int(rel[keep].sum())
    return RelevanceCalibration(float(slope), float(intercept), query_modality, relevant_by, len(q), n_rel,
                                int(keep.sum()), fitted_on)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# ---- stored with the index ---------------------------------------------------------------------
def save_calibration(folder: str | Path, cal: RelevanceCalibration, space: str) -> Path:
    """Adds (or replaces) the calibration of cal.query_modality in FOLDER/relevance.json, atomically."""
    from modalign.utils.io import atomic_write_json

    path = Path(folder) / RELEVANCE_NAME
    data: dict[str, Any] = {"format": FORMAT, "space": space, "calibrations": {}}
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("space") == space:
            data["calibrations"] = old.get("calibrations", {})
    data["calibrations"][cal.query_modality] = asdict(cal)
    atomic_write_json(path, data)
    return path


def load_calibrations(folder: str | Path, space: str | None = None) -> dict[str, RelevanceCalibration]:
    """{query modality: calibration} stored with an index; {} when none, or when fitted in another space."""
    path = Path(folder) / RELEVANCE_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        cals = {m: RelevanceCalibration(**c) for m, c in data["calibrations"].items()}
    except (ValueError, KeyError, TypeError) as e:
        logger.warning("ignoring %s: not a relevance calibration (%s); refit with `modalign index calibrate`", path, e)
        return {}
    if space is not None and data.get("space") != space:
        logger.warning("ignoring %s: fitted in embedding space %s, the index is in %s; refit with "
                       "`modalign index calibrate`", path, data.get("space"), space)
        return {}
    return cals


# ---- how many hits to return -------------------------------------------------------------------
@dataclass(frozen=True)
class CutPolicy:
    k: int = 10  # hits returned when neither rule is on
    min_relevance: float | None = None  # keep hits whose calibrated relevance is >= this
    adaptive_k: bool = False  # cut at the largest gap of the score curve
    k_max: int = 50  # candidates looked at (and returned at most) when a rule is on
    k_min: int = 1  # adaptive_k keeps at least this many (min_relevance may still keep fewer)

    def __post_init__(self) -> None:
        if self.k < 1 or self.k_max < 1 or not 1 <= self.k_min <= self.k_max:
            raise ConfigError(f"need k >= 1, k_max >= 1 and 1 <= k_min <= k_max; got k={self.k}, "
                              f"k_max={self.k_max}, k_min={self.k_min}")
        if self.min_relevance is not None and not 0 <= self.min_relevance <= 1:
            raise ConfigError(f"min_relevance must lie in [0, 1]; got {self.min_relevance}")

    @property
    def adaptive(self) -> bool:
        return self.adaptive_k or self.min_relevance is not None

    @property
    def fetch(self) -> int:
        """How many candidates to ask the index for."""
        return self.k_max if self.adaptive else self.k


def cut(scores: np.ndarray, relevance: np.ndarray | None, policy: CutPolicy) -> int:
    """How many of a query's hits to keep; scores: (n,) sorted descending, relevance: (n,) or None."""
    scores = np.asarray(scores, dtype=np.float64)
    n = min(len(scores), policy.fetch)
    if not policy.adaptive:
        return n
    keep = n
    if policy.min_relevance is not None:
        if relevance is None:
            raise ConfigError("min_relevance needs a relevance calibration stored with the index: fit one with "
                              "`modalign index calibrate INDEX --pairs DATA` (or --images for image queries)")
        below = np.flatnonzero(np.asarray(relevance)[:n] < policy.min_relevance)
        keep = int(below[0]) if len(below) else n
    if policy.adaptive_k and keep > policy.k_min:
        gaps = scores[policy.k_min - 1:keep - 1] - scores[policy.k_min:keep]  # gap after rank k_min .. keep-1
        keep = policy.k_min + int(np.argmax(gaps))
    return keep


def apply_policy(hits: Sequence[Hit], calibration: RelevanceCalibration | None, policy: CutPolicy) -> list[Hit]:
    """A query's hits (best first, at least policy.fetch of them when there are) with their relevance filled
    in when a calibration is given, cut to the number `cut` keeps."""
    scores = np.array([h.score for h in hits], dtype=np.float64)
    rel = calibration(scores) if calibration is not None else None
    n = cut(scores, rel, policy)
    if rel is None:
        return list(hits[:n])
    return [replace(h, relevance=float(r)) for h, r in zip(hits[:n], rel[:n], strict=True)]
