"""Calibrated relevance and adaptive top-k for the routes: a request's cut policy, and its hits cut by it.

A request may add `min_relevance` (0..1), `adaptive_k` (bool) and `k_max` (<= the service's max_k) to k;
the batcher then searches k_max candidates and `finish` cuts each query's hits (search/relevance.py).
Every hit carries `relevance` beside `score` when the index has a calibration for the query's modality.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modalign.errors import ConfigError
from modalign.search.relevance import CutPolicy, RelevanceCalibration, apply_policy
from modalign.search.service.config import BadInput, ServiceConfig


def request_policy(k: int, min_relevance: float | None, adaptive_k: bool, k_max: int | None,
                   config: ServiceConfig, calibration: RelevanceCalibration | None) -> CutPolicy:
    """The policy of one request; 400 for values out of range or min_relevance without a calibration."""
    k_max = k_max if k_max is not None else min(50, config.max_k)
    if not 1 <= k_max <= config.max_k:
        raise BadInput(400, f"k_max must be between 1 and {config.max_k}; got {k_max}")
    if min_relevance is not None and calibration is None:
        raise BadInput(400, "min_relevance needs a relevance calibration for this query type: fit one with "
                            "`modalign index calibrate INDEX ...` and restart the service")
    try:
        return CutPolicy(k=k, min_relevance=min_relevance, adaptive_k=adaptive_k, k_max=k_max)
    except ConfigError as e:
        raise BadInput(400, str(e)) from e


def finish(hits: Sequence[Sequence[Any]], calibration: RelevanceCalibration | None,
           policy: CutPolicy) -> list[list[Any]]:
    """Each query's hits with relevance filled in (when calibrated) and cut by the policy."""
    return [apply_policy(h, calibration, policy) for h in hits]
