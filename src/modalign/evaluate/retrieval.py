"""Image <-> text retrieval recall@k when an image may have several captions (and vice versa).

Definitions (as in CLIP_benchmark, which names them from the side being retrieved):
  image_retrieval_recall@k  text -> image: for each caption, is one of its images among the k images
                            most similar to it?
  text_retrieval_recall@k   image -> text: for each image, is ANY of its captions among the k captions
                            most similar to it? (an image with 5 captions counts once, not 5 times)
Positives are items sharing a group id. The rank of a query is the number of non-positive candidates
scoring AT LEAST as high as its best positive (ties count against the query; NaN never counts as found:
see evaluate.ranks); hit@k <=> rank < k. Computed in query blocks: memory O(block * n_candidates).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from modalign.evaluate.ranks import hits, ranks_of_best_positive


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x.float() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float32))


def best_positive_ranks(
    queries: torch.Tensor, candidates: torch.Tensor, q_groups: torch.Tensor, c_groups: torch.Tensor,
    block: int = 1024,
) -> torch.Tensor:
    """(n_q,) rank of the best-scoring positive candidate for each query; -1 where a query has no positive,
    ranks.NOT_FOUND where its positives all score NaN."""
    ranks = torch.empty(len(queries), dtype=torch.long)
    for start in range(0, len(queries), block):
        q = queries[start : start + block]
        scores = q @ candidates.t()  # (b, n_c)
        positive = q_groups[start : start + block, None] == c_groups[None, :]  # (b, n_c)
        ranks[start : start + block] = ranks_of_best_positive(scores, positive)
    return ranks


def retrieval_metrics(
    image_emb: np.ndarray | torch.Tensor, text_emb: np.ndarray | torch.Tensor,
    image_groups: np.ndarray, text_groups: np.ndarray, ks: tuple[int, ...] = (1, 5, 10),
) -> dict[str, float]:
    """Flat dict: image_retrieval_recall@k, text_retrieval_recall@k for each k, plus their mean at k=1."""
    img = F.normalize(_as_tensor(image_emb), dim=-1)  # (n_i, d)
    txt = F.normalize(_as_tensor(text_emb), dim=-1)  # (n_t, d)
    ig = torch.as_tensor(np.asarray(image_groups), dtype=torch.long)
    tg = torch.as_tensor(np.asarray(text_groups), dtype=torch.long)
    t2i = best_positive_ranks(txt, img, tg, ig)
    i2t = best_positive_ranks(img, txt, ig, tg)
    t2i, i2t = t2i[t2i >= 0], i2t[i2t >= 0]
    if len(t2i) == 0 or len(i2t) == 0:
        raise ValueError("no query has a positive among the candidates: do the image and text groups match?")
    out: dict[str, float] = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = hits(t2i, k).mean().item()
        out[f"text_retrieval_recall@{k}"] = hits(i2t, k).mean().item()
    out["mean_recall@1"] = 0.5 * (hits(t2i, 1).mean().item() + hits(i2t, 1).mean().item())
    out["n_images"] = float(len(i2t))
    out["n_texts"] = float(len(t2i))
    return out


def pairwise_retrieval_metrics(
    a_emb: np.ndarray | torch.Tensor, b_emb: np.ndarray | torch.Tensor, a_groups: np.ndarray, b_groups: np.ndarray,
    names: tuple[str, str], ks: tuple[int, ...] = (1, 5, 10),
) -> dict[str, float]:
    """Retrieval between any two modalities, named by query then target (e.g. names=("audio", "text")):

      audio_text_recall@k   each audio item as the query: is one of its texts among the k most similar texts?
      text_audio_recall@k   each text as the query: is one of its audio items among the k most similar?
      audio_text_mean_recall@1   the mean of the two at k = 1
    Positives share a group; queries with no positive among the candidates are left out (as above).
    """
    a_name, b_name = names
    a = F.normalize(_as_tensor(a_emb), dim=-1)  # (n_a, d)
    b = F.normalize(_as_tensor(b_emb), dim=-1)  # (n_b, d)
    ga = torch.as_tensor(np.asarray(a_groups), dtype=torch.long)
    gb = torch.as_tensor(np.asarray(b_groups), dtype=torch.long)
    a2b, b2a = best_positive_ranks(a, b, ga, gb), best_positive_ranks(b, a, gb, ga)
    a2b, b2a = a2b[a2b >= 0], b2a[b2a >= 0]
    if len(a2b) == 0 or len(b2a) == 0:
        raise ValueError(f"no query has a positive among the candidates: do the {a_name} and {b_name} groups match?")
    out: dict[str, float] = {}
    for k in ks:
        out[f"{a_name}_{b_name}_recall@{k}"] = hits(a2b, k).mean().item()
        out[f"{b_name}_{a_name}_recall@{k}"] = hits(b2a, k).mean().item()
    out[f"{a_name}_{b_name}_mean_recall@1"] = 0.5 * (hits(a2b, 1).mean().item() + hits(b2a, 1).mean().item())
    out[f"n_{a_name}"] = float(len(a2b))
    out[f"n_{b_name}"] = float(len(b2a))
    return out
