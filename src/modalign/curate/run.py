"""Curating a training subset that covers the concepts evenly, within a budget of pairs.

    result = curate(pool, ["animals", "food", "flower", ...], CurateConfig(budget=200), store)
    write_pairs(pool, result, "curated.csv")              # the chosen pairs, with their concept
    result.coverage()                                     # pairs per concept: pool, duplicates, chosen

Steps, every vector from the embedding store:
  1. a group whose own label (class name) is a concept takes it; every other group gets, through the text
     encoder, the concept whose prompt its captions are closest to (with an aligned model, its image votes
     too: modalign.curate.assign)
  2. near-duplicates dropped: a group whose image or caption vector has cosine > `dedup_threshold` with an
     earlier group's (raw encoder features, centred) is not eligible (modalign.curate.dedup)
  3. the budget is spread evenly over the concepts, drawn at random within each (modalign.curate.sampling)
A budget is counted in groups (an image with all its captions); groups with no encodable caption or no
image the store could read are out (never worth a place in the budget).
With `min_similarity`, a group whose best concept is less similar than that stays unassigned and out.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modalign.curate.assign import assign_concepts, centred_scores, group_vectors, prompt_vectors
from modalign.curate.dedup import near_duplicates
from modalign.curate.sampling import balanced_sample
from modalign.data.column import AlignedDataset
from modalign.errors import ConfigError
from modalign.features.pipeline import encode_column
from modalign.store.embeddings import StoredEmbeddings
from modalign.utils.io import atomic_write
from modalign.utils.paths import user_path

if TYPE_CHECKING:
    from modalign.model import AlignedModel
    from modalign.store import EmbeddingStore

logger = logging.getLogger(__name__)


@dataclass
class CurateConfig:
    budget: int  # groups (pairs) to choose
    text_encoder: str = "minilm-l6"  # embeds captions and concept prompts (assignment, caption duplicates)
    image_encoder: str = "effnet-lite0"  # image features for near-duplicate detection
    prompt: str = "a photo of a {c}."  # concept prompt; '{c}' is replaced by the concept
    dedup_threshold: float | None = 0.95  # cosine above which a later group is a near-duplicate; None: off
    dedup_on: list[str] = field(default_factory=lambda: ["image", "text"])  # features compared for duplicates
    image_weight: float = 0.5  # with an aligned model: weight of its image-prompt similarity in the assignment
    min_similarity: float | None = None  # caption-prompt cosine below which a group stays unassigned
    use_labels: bool = True  # a group whose own label is a concept takes it (similarity only for the others)
    centre: bool = True  # rank concepts on centred caption/prompt vectors (curate.assign.centred_scores)
    seed: int = 0  # the random draws within each concept
    device: str = "cpu"

    def check(self) -> None:
        if self.budget < 1:
            raise ConfigError(f"the budget must be at least 1 pair, got {self.budget}")
        unknown = set(self.dedup_on) - {"image", "text"}
        if unknown:
            raise ConfigError(f"dedup_on takes 'image' and/or 'text', got {sorted(unknown)}")
        if "{c}" not in self.prompt:
            raise ConfigError(f"the concept prompt must contain '{{c}}' where the concept goes; got {self.prompt!r}")
        if self.dedup_threshold is not None and not -1 <= self.dedup_threshold <= 1:
            raise ConfigError(f"dedup_threshold is a cosine in [-1, 1] (or None), got {self.dedup_threshold}")


@dataclass
class CurationResult:
    concepts: list[str]
    groups: np.ndarray  # (P,) pool group ids, sorted
    assignment: np.ndarray  # (P,) concept index per pool group; -1: unassigned (no caption, below min_similarity)
    similarity: np.ndarray  # (P,) caption-prompt cosine of the assigned concept (nan when unassigned)
    duplicate: np.ndarray  # (P,) bool: a near-duplicate of an earlier pool group
    chosen: np.ndarray  # (B,) positions into `groups` of the chosen pool groups
    config: CurateConfig

    @property
    def chosen_groups(self) -> np.ndarray:
        """(B,) group ids of the curated subset, sorted."""
        return self.groups[self.chosen]

    def coverage(self) -> list[dict[str, Any]]:
        """Per concept: groups assigned in the pool, of which near-duplicates, and chosen."""
        picked = np.zeros(len(self.groups), dtype=bool)
        picked[self.chosen] = True
        rows = []
        for c, name in enumerate(self.concepts):
            mine = self.assignment == c
            rows.append({"concept": name, "pool": int(mine.sum()), "duplicates": int((mine & self.duplicate).sum()),
                         "chosen": int((mine & picked).sum())})
        return rows

    def summary(self) -> dict[str, Any]:
        cov = self.coverage()
        chosen = np.array([r["chosen"] for r in cov])
        pool = np.array([r["pool"] for r in cov])
        return {
            "n_pool": int(len(self.groups)), "n_chosen": int(len(self.chosen)), "budget": self.config.budget,
            "n_concepts": len(self.concepts), "concepts_in_pool": int((pool > 0).sum()),
            "concepts_chosen": int((chosen > 0).sum()), "n_duplicates": int(self.duplicate.sum()),
            "n_unassigned": int((self.assignment < 0).sum()),
            "balance_chosen": concept_balance(chosen), "balance_pool": concept_balance(pool),
        }

    def report(self) -> dict[str, Any]:
        return {"summary": self.summary(), "coverage": self.coverage(), "config": asdict(self.config)}


def concept_balance(counts: np.ndarray) -> float:
    """Normalised entropy of a distribution over concepts: 1 = perfectly even, 0 = all in one concept."""
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[counts > 0]
    if len(counts) < 2:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(len(p)))


def curate(dataset: AlignedDataset, concepts: list[str], config: CurateConfig, store: EmbeddingStore,
           groups: np.ndarray | None = None, model: AlignedModel | None = None, progress: bool = True) -> CurationResult:
    """Chooses at most `config.budget` groups of `groups` (default: all) covering `concepts` evenly."""
    from modalign.encoders.registry import create_encoder

    config.check()
    if not concepts:
        raise ConfigError("no concepts to curate for: give class names, a concept file, or mine them from captions")
    if not isinstance(dataset, AlignedDataset) or "text" not in dataset.columns:
        raise ConfigError(f"curation needs a set of pairs with captions; {getattr(dataset, 'name', dataset)!r} "
                          f"has none")
    pool = np.unique(np.arange(dataset.n_groups) if groups is None else np.asarray(groups, dtype=np.int64))
    text_enc = create_encoder(config.text_encoder, device=config.device)
    text_entry = encode_column(store, dataset.column("text"), text_enc, progress=progress)
    captions, has_caption = group_vectors(dataset, text_entry, "text", pool)
    prompts = prompt_vectors(store, concepts, config.prompt, text_enc, "final")
    caption_sim = captions @ prompts.T  # (P, C)
    image_sim = _model_image_similarity(dataset, concepts, config, store, pool, model, progress)
    scores = centred_scores(captions, has_caption, prompts) if config.centre else caption_sim
    assignment = assign_concepts(scores, image_sim, config.image_weight)
    assignment = _own_labels(dataset, concepts, pool, assignment) if config.use_labels else assignment
    similarity = caption_sim[np.arange(len(pool)), assignment]
    images = _images(dataset, config, store, pool, progress)  # ((P, d), (P,) readable) or None
    unassigned = ~has_caption if images is None else ~has_caption | ~images[1]
    if config.min_similarity is not None:
        unassigned |= similarity < config.min_similarity
    assignment = np.where(unassigned, -1, assignment)
    similarity = np.where(unassigned, np.nan, similarity)

    duplicate = np.zeros(len(pool), dtype=bool)
    if config.dedup_threshold is not None:
        feats = {"text": (captions, has_caption), **({"image": images} if images is not None else {})}
        for name in config.dedup_on:
            if name in feats:
                vecs, present = feats[name]
                dup = np.zeros(len(pool), dtype=bool)
                dup[present] = near_duplicates(vecs[present], config.dedup_threshold)
                logger.info("%d of %d pool groups are near-duplicates by %s (cosine > %.3f)", int(dup.sum()),
                            int(present.sum()), name, config.dedup_threshold)
                duplicate |= dup
    eligible = (assignment >= 0) & ~duplicate
    chosen = balanced_sample(assignment, eligible, len(concepts), config.budget, config.seed)
    if len(chosen) < config.budget:
        logger.warning("only %d eligible pairs for a budget of %d (pool %d, %d near-duplicates, %d unassigned)",
                       len(chosen), config.budget, len(pool), int(duplicate.sum()), int((assignment < 0).sum()))
    result = CurationResult(list(concepts), pool, assignment, similarity, duplicate, chosen, config)
    s = result.summary()
    logger.info("curated %d of %d pairs over %d/%d concepts (balance %.2f; pool %.2f)", s["n_chosen"], s["n_pool"],
                s["concepts_chosen"], s["n_concepts"], s["balance_chosen"], s["balance_pool"])
    return result


def _own_labels(dataset: AlignedDataset, concepts: list[str], pool: np.ndarray, assignment: np.ndarray) -> np.ndarray:
    """A group whose own label (its class name) is one of the concepts takes that concept: the data says so."""
    if dataset.group_labels is None or not dataset.classnames:
        return assignment
    index = {c.lower(): i for i, c in enumerate(concepts)}
    concept_of_class = np.array([index.get(str(n).lower(), -1) for n in dataset.classnames])
    labels = np.asarray(dataset.group_labels)[pool]
    known = concept_of_class[np.where(labels >= 0, labels, 0)]
    known = np.where(labels >= 0, known, -1)
    if (known >= 0).any():
        logger.info("%d of %d pool groups take their own label as concept; the rest by similarity",
                    int((known >= 0).sum()), len(pool))
    return np.where(known >= 0, known, assignment)


def _images(dataset: AlignedDataset, config: CurateConfig, store: EmbeddingStore, pool: np.ndarray,
            progress: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """((P, d) image features, (P,) bool: the store could read the group's image), or None without images.
    A group whose image the encoder skipped (missing, corrupt ...) is never chosen: it cannot be trained on."""
    from modalign.encoders.registry import create_encoder

    if "image" not in dataset.columns:
        return None
    image_enc = create_encoder(config.image_encoder, device=config.device)
    entry = encode_column(store, dataset.column("image"), image_enc, progress=progress)
    vecs, readable = group_vectors(dataset, entry, "image", pool)
    if not readable.all():
        logger.warning("%d of %d pool groups have no image the store could read (%s): left out", int((~readable).sum()),
                       len(pool), entry.report.summary() if isinstance(entry, StoredEmbeddings) else "skipped")
    return vecs, readable


def _model_image_similarity(dataset: AlignedDataset, concepts: list[str], config: CurateConfig, store: EmbeddingStore,
                            pool: np.ndarray, model: AlignedModel | None, progress: bool) -> np.ndarray | None:
    """(P, C) image-prompt cosine in an aligned model's shared space, or None without a model."""
    if model is None:
        return None
    if "image" not in dataset.columns:
        raise ConfigError("an aligned model votes with the images, but this data set has no image column")

    def projector(modality: str) -> Any:
        return lambda x: model.project(modality, x).detach().cpu().numpy()

    image_tower, text_tower = model.towers["image"], model.towers["text"]
    entry = encode_column(store, dataset.column("image"), model.encoder("image"), image_tower.layer, progress=progress)
    images, has_image = group_vectors(dataset, entry, "image", pool, projector("image"))
    prompts = prompt_vectors(store, concepts, config.prompt, model.encoder("text"), text_tower.layer,
                             projector("text"))
    sim = images @ prompts.T  # (P, C)
    sim[~has_image] = sim[has_image].mean(axis=0) if has_image.any() else 0.0  # no image: no vote
    return sim


def write_pairs(dataset: AlignedDataset, result: CurationResult, path: str | Path) -> Path:
    """The chosen groups' pairs (every caption with its image) as CSV or JSONL, by the file's suffix.

    Columns: image (absolute path), caption, concept, similarity, group (the group's name).
    """
    path = user_path(path)
    if path.suffix.lower() not in (".csv", ".jsonl"):
        raise ConfigError(f"write the curated pairs to a .csv or .jsonl file, not {path.name}")
    images, texts = dataset.column("image"), dataset.column("text")
    image_of: dict[int, Any] = {}
    for row in np.flatnonzero(np.isin(images.groups, result.chosen_groups)):
        image_of.setdefault(int(images.groups[row]), images.items[int(row)])
    position = {int(g): i for i, g in enumerate(result.groups)}
    records = []
    for row in np.flatnonzero(np.isin(texts.groups, result.chosen_groups)):
        g = int(texts.groups[row])
        item = image_of.get(g)
        if not isinstance(item, str | Path):
            raise ConfigError(f"group {dataset.group_names[g]!r} has no image file to write (in-memory images "
                              f"cannot go into a pairs file)")
        p = position[g]
        records.append({"image": str(Path(item).resolve()), "caption": texts.items[int(row)],
                        "concept": result.concepts[result.assignment[p]],
                        "similarity": round(float(result.similarity[p]), 4), "group": dataset.group_names[g]})
    def write(f: Any) -> None:
        text = io.StringIO(newline="")
        if path.suffix.lower() == ".csv":
            writer = csv.DictWriter(text, fieldnames=["image", "caption", "concept", "similarity", "group"])
            writer.writeheader()
            writer.writerows(records)
        else:
            text.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        f.write(text.getvalue().encode("utf-8"))

    atomic_write(path, write)
    return path
