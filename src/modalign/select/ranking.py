"""Which encoders and layers to align: score every (image encoder, layer) x (text encoder, layer) pairing.

On a probe set of pairs (one image and one caption per group, at most `n` groups), each candidate encoder
encodes all of its requested layers in one store call (cached: nothing is encoded twice, and a later
`modalign train` on the same data reuses the vectors). Every image candidate is then compared with every
text candidate by each similarity metric (modalign.select.metrics) on the same probe items, and the
pairings are ranked by one of them. Items an encoder skips (an undecodable image) are dropped from every
candidate, so all scores are on the same rows.

    result = run_selection(load_dataset("tuxpaint"), SelectConfig(
        encoders={"image": ["effnet-lite0", "effnet-lite2"], "text": ["minilm-l6"]}, layer_step=2), store)
    result.scores[0]          # the best pairing under config.rank_by
    result.best_layers        # {"effnet-lite0": "blocks.15", ...}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from modalign.data.column import AlignedDataset
from modalign.errors import ConfigError
from modalign.select.metrics import METRICS, Features, compute_metric, get_metric

if TYPE_CHECKING:
    from modalign.store import EmbeddingStore

logger = logging.getLogger(__name__)

DEFAULT_METRICS = ("mutual_knn", "cknna", "unbiased_cka", "linear_cka")


@dataclass(frozen=True)
class Candidate:
    modality: str  # "image" | "text" ...
    encoder: str  # encoder spec
    layer: str  # resolved layer name

    @property
    def label(self) -> str:
        return f"{self.encoder}:{self.layer}"


@dataclass
class PairScore:
    a: Candidate  # first modality (image)
    b: Candidate  # second modality (text)
    scores: dict[str, float]  # metric -> value

    def row(self) -> dict[str, Any]:
        return {self.a.modality: self.a.label, self.b.modality: self.b.label, **self.scores}


@dataclass
class SelectConfig:
    encoders: dict[str, list[str]]  # modality -> candidate encoder specs, e.g. {"image": [...], "text": [...]}
    layers: dict[str, list[str]] = field(default_factory=dict)  # encoder spec -> layers (default: declared ones)
    layer_step: int = 1  # without `layers` for a spec: every n-th declared layer, counted back from "final"
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))  # registered metric names
    rank_by: str = "mutual_knn"  # the metric the ranking (and best layers) follow
    k: int = 10  # neighbourhood size of the kNN metrics
    n: int = 1000  # probe pairs (groups) at most, drawn at random when the data set has more
    seed: int = 0  # which probe groups are drawn
    dtype: str = "float32"  # store dtype
    batch_size: int = 32  # encode batch size

    def check(self) -> None:
        if len(self.encoders) != 2 or any(not specs for specs in self.encoders.values()):
            raise ConfigError(f"selection compares two modalities with at least one encoder each; got {self.encoders}")
        for name in [*self.metrics, self.rank_by]:
            try:
                get_metric(name)
            except ValueError as e:
                raise ConfigError(str(e)) from e
        if self.rank_by not in self.metrics:
            self.metrics = [*self.metrics, self.rank_by]
        if self.layer_step < 1 or self.n < 2 or self.k < 1:
            raise ConfigError(f"need layer_step >= 1, n >= 2, k >= 1; got {self.layer_step}, {self.n}, {self.k}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SelectionResult:
    config: SelectConfig
    modalities: tuple[str, str]  # (first, second), e.g. ("image", "text")
    scores: list[PairScore]  # every pairing, best first under config.rank_by
    best_layers: dict[str, str]  # encoder spec -> its layer in the best-ranked pairing that uses the encoder
    layers: dict[str, list[str]]  # encoder spec -> the layers scored, shallow to deep
    n_probe: int  # probe items every score was computed on
    seconds: dict[str, float]  # encode / score

    def table(self) -> list[dict[str, Any]]:
        return [{"rank": i + 1, **s.row()} for i, s in enumerate(self.scores)]

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "modalities": list(self.modalities), "n_probe": self.n_probe,
                "rank_by": self.config.rank_by, "best_layers": self.best_layers, "layers": self.layers,
                "best_pair": self.scores[0].row() if self.scores else None,
                "ranking": self.table(), "seconds": self.seconds, "metric_descriptions": METRICS.descriptions()}


# ---- candidates --------------------------------------------------------------------------------------------
def candidate_layers(encoder: Any, requested: Sequence[str] | None = None, step: int = 1) -> list[str]:
    """The layers to score: `requested` (resolved), else every `step`-th declared layer counted back from the
    last one (so "final" is always in), shallow to deep."""
    if requested:
        return list(dict.fromkeys(encoder.resolve_layers(list(requested))))
    names = encoder.layer_names()
    return names[len(names) - 1 :: -step][::-1]


def probe_rows(dataset: AlignedDataset, modalities: Sequence[str], n: int, seed: int = 0,
               groups: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """{modality: rows}: one item (the first) per group, for at most `n` random groups having every modality
    (among `groups` when given, e.g. a training split). Rows are aligned: row i of each modality belongs to
    the same group.
    """
    cols = {m: dataset.column(m) for m in modalities}
    firsts = {}
    for m, col in cols.items():
        groups, first = np.unique(col.groups, return_index=True)  # first row of each group
        firsts[m] = dict(zip(groups.tolist(), first.tolist(), strict=True))
    shared = sorted(set.intersection(*(set(f) for f in firsts.values())))
    if groups is not None:
        shared = sorted(set(shared) & set(np.asarray(groups).tolist()))
    if len(shared) < 2:
        raise ConfigError(f"data set {dataset.name!r} has {len(shared)} group(s) with items in every modality "
                          f"({', '.join(modalities)}); need at least 2")
    if len(shared) > n:
        shared = sorted(np.random.default_rng(seed).choice(shared, size=n, replace=False).tolist())
    return {m: np.asarray([firsts[m][g] for g in shared], dtype=np.int64) for m in modalities}


def encode_candidates(column: Any, specs: Sequence[str], layers: Mapping[str, Sequence[str]], step: int,
                      store: EmbeddingStore, *, device: str = "cpu", dtype: str = "float32", batch_size: int = 32,
                      progress: bool = True) -> dict[Candidate, Any]:
    """{Candidate: StoredEmbeddings} for every requested layer of every encoder, one store.encode per encoder."""
    from modalign.encoders.registry import create_encoder

    out: dict[Candidate, Any] = {}
    for spec in specs:
        encoder = create_encoder(spec, device=device)
        names = candidate_layers(encoder, layers.get(spec), step)
        entries = store.encode(column, encoder, names, dtype=dtype, batch_size=batch_size, progress=progress)
        for name in names:
            out[Candidate(column.modality, spec, name)] = entries[name]
    return out


# ---- scoring -----------------------------------------------------------------------------------------------
def score_grid(a: Mapping[Candidate, Any], b: Mapping[Candidate, Any], metrics: Sequence[str], k: int = 10,
               progress: bool = True) -> list[PairScore]:
    """Every metric for every (a, b) candidate pairing; values are (n, d) matrices of the same n items."""
    from tqdm.auto import tqdm

    fa = {c: Features(x, c.label) for c, x in a.items()}  # checked once, kNN lists cached per candidate
    fb = {c: Features(x, c.label) for c, x in b.items()}
    out = []
    bar = tqdm(total=len(fa) * len(fb), desc="score", unit="pair", disable=not progress or None, leave=False)
    for ca, xa in fa.items():
        for cb, xb in fb.items():
            out.append(PairScore(ca, cb, {m: compute_metric(m, xa, xb, k=k) for m in metrics}))
            bar.update()
    bar.close()
    return out


def rank(scores: Sequence[PairScore], by: str) -> list[PairScore]:
    """Best first; ties keep the candidates' order."""
    return sorted(scores, key=lambda s: -s.scores[by])


def best_layers(ranked: Sequence[PairScore]) -> dict[str, str]:
    """Encoder spec -> its layer in the best-ranked pairing that uses that encoder."""
    out: dict[str, str] = {}
    for s in ranked:
        for c in (s.a, s.b):
            out.setdefault(c.encoder, c.layer)
    return out


def run_selection(dataset: AlignedDataset, config: SelectConfig, store: EmbeddingStore, device: str = "cpu",
                  progress: bool = True) -> SelectionResult:
    """Encodes the probe set with every candidate (cached) and ranks every pairing."""
    config.check()
    if not isinstance(dataset, AlignedDataset):
        raise ConfigError(f"data set {getattr(dataset, 'name', dataset)!r} is not a set of pairs (it has one "
                          f"modality); selection needs aligned items, e.g. a pairs file or 'tuxpaint'")
    ma, mb = config.encoders
    t0 = time.perf_counter()
    rows = probe_rows(dataset, (ma, mb), config.n, config.seed)
    stored: dict[str, dict[Candidate, Any]] = {}
    for m in (ma, mb):
        col = dataset.column(m)
        probe = col if np.array_equal(rows[m], np.arange(len(col))) else col.take(rows[m])
        stored[m] = encode_candidates(probe, config.encoders[m], config.layers, config.layer_step, store,
                                      device=device, dtype=config.dtype, batch_size=config.batch_size,
                                      progress=progress)
    valid = np.logical_and.reduce([np.asarray(e.valid) for per in stored.values() for e in per.values()])
    keep = np.flatnonzero(valid)
    if len(valid) - len(keep):
        logger.info("%d of %d probe pairs left out: an encoder skipped their item", len(valid) - len(keep), len(valid))
    t1 = time.perf_counter()
    feats = {m: {c: e.vectors(keep) for c, e in stored[m].items()} for m in (ma, mb)}
    logger.info("scoring %d x %d candidate pairings on %d probe pairs with %s (k=%d)", len(feats[ma]),
                len(feats[mb]), len(keep), ", ".join(config.metrics), config.k)
    try:
        ranked = rank(score_grid(feats[ma], feats[mb], config.metrics, config.k, progress), config.rank_by)
    except ValueError as e:  # too few probe pairs for k, a constant layer ...: say which run it was
        raise ConfigError(f"scoring {len(keep)} probe pairs of {dataset.name!r} failed: {e}") from e
    seconds = {"encode": t1 - t0, "score": time.perf_counter() - t1}
    layers: dict[str, list[str]] = {}
    for per in stored.values():
        for c in per:
            layers.setdefault(c.encoder, []).append(c.layer)
    return SelectionResult(config, (ma, mb), ranked, best_layers(ranked), layers, len(keep), seconds)
