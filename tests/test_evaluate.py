"""Metric definitions checked on hand-built embeddings whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalign.errors import ConfigError
from modalign.evaluate.retrieval import retrieval_metrics
from modalign.evaluate.zeroshot import class_embeddings, load_templates, zeroshot_metrics


def test_retrieval_with_several_captions_per_image():
    # 3 images on the axes; image 0 has two captions, one of them pointing at image 1 (a miss at @1).
    images = np.eye(3, dtype=np.float32)
    texts = np.array([[1, 0, 0], [0.1, 1, 0], [0, 1, 0.2], [0, 0, 1]], dtype=np.float32)
    image_groups = np.array([0, 1, 2])
    text_groups = np.array([0, 0, 1, 2])
    m = retrieval_metrics(images, texts, image_groups, text_groups, ks=(1, 2))
    # text->image: captions 0, 2, 3 find their image first; caption 1 ranks image 1 first, image 0 second
    assert m["image_retrieval_recall@1"] == pytest.approx(3 / 4)
    assert m["image_retrieval_recall@2"] == pytest.approx(1.0)
    # image->text: image 0 -> caption 0, hit; image 1 -> caption 1 (of image 0, cos 0.995) beats its own
    # caption 2 (cos 0.98), miss; image 2 -> caption 3, hit
    assert m["text_retrieval_recall@1"] == pytest.approx(2 / 3)
    assert m["n_images"] == 3 and m["n_texts"] == 4


def test_retrieval_image_counts_once_even_with_many_captions():
    images = np.eye(3, dtype=np.float32)[:2]
    # image 0 has captions along axes 0 and 1; image 1 has 3 captions near axis 2. For image 1 the caption
    # of image 0 along axis 1 scores 1.0, above its own (<= 0.37): one miss, counted once, not three times.
    texts = np.array([[1, 0, 0], [0, 1, 0], [0, 0.2, 1], [0, 0.3, 1], [0, 0.4, 1]], dtype=np.float32)
    m = retrieval_metrics(images, texts, np.array([0, 1]), np.array([0, 0, 1, 1, 1]), ks=(1,))
    assert m["text_retrieval_recall@1"] == pytest.approx(0.5)
    # text->image: caption 1 (of image 0) lies on image 1's axis: the only miss of 5
    assert m["image_retrieval_recall@1"] == pytest.approx(0.8)


def test_retrieval_rejects_disjoint_groups():
    with pytest.raises(ValueError, match="no query has a positive"):
        retrieval_metrics(np.eye(2), np.eye(2), np.array([0, 1]), np.array([5, 6]))


def test_zeroshot_metrics_on_known_predictions():
    classes = torch.eye(3)
    # 4 images of class 0 (3 right), 1 image of class 1 (wrong, predicted 2), 1 of class 2 (right)
    emb = torch.tensor([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0.2, 1], [0, 0, 1]], dtype=torch.float32)
    labels = np.array([0, 0, 0, 0, 1, 2])
    m = zeroshot_metrics(emb, labels, classes)
    assert m["acc1"] == pytest.approx(4 / 6)
    assert m["mean_per_class_recall"] == pytest.approx((3 / 4 + 0 + 1) / 3)
    assert m["acc5"] == pytest.approx(1.0)  # top-3 of 3 classes always contains the label


def test_template_ensemble_averages_then_normalises():
    def encode(prompts):  # a fake text tower that is deterministic per prompt
        return torch.stack([torch.tensor([len(p), p.count("a"), 1.0]) for p in prompts])

    emb = class_embeddings(encode, ["cat", "zebra"], ["a {c}", "the {c}."])
    assert emb.shape == (2, 3)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2))


def test_templates_named_and_checked():
    assert "{c}" in load_templates("default")[0]
    with pytest.raises(ConfigError, match="unknown template set"):
        load_templates("nope")
    with pytest.raises(ConfigError, match="must contain"):
        load_templates(["a photo"])


# ---- ties and NaN never count as found (issue 16, item 1) ------------------------------------------
@pytest.mark.parametrize("fill", [0.0, 1.0, float("nan")])
def test_constant_or_nan_embeddings_score_zero_not_one(fill):
    n = 20
    images, texts = np.full((n, 8), fill, dtype=np.float32), np.full((n, 8), fill, dtype=np.float32)
    groups = np.arange(n)
    m = retrieval_metrics(images, texts, groups, groups, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert m[f"image_retrieval_recall@{k}"] == 0.0
        assert m[f"text_retrieval_recall@{k}"] == 0.0
    z = zeroshot_metrics(torch.full((n, 8), fill), np.arange(n) % 8, torch.full((8, 8), fill))
    assert z["acc1"] == 0.0 and z["acc5"] == 0.0 and z["mean_per_class_recall"] == 0.0


def test_a_tie_counts_against_the_query_and_a_nan_candidate_beats_it():
    images = np.eye(4, dtype=np.float32)
    texts = np.eye(4, dtype=np.float32)
    images[1], texts[1] = images[0], texts[0]  # pairs 0 and 1 identical: each caption ties with the other image
    images[3] = np.nan  # image 3 NaN: caption 3 never finds it, and it "beats" every other caption's image
    m = retrieval_metrics(images, texts, np.arange(4), np.arange(4), ks=(1, 2, 3, 4))
    # text->image ranks: caption 0: image 1 ties (>=) + NaN image 3 -> 2; caption 1 the same; caption 2:
    # NaN image 3 -> 1; caption 3: its image is NaN -> not found at any k
    assert m["image_retrieval_recall@1"] == 0.0
    assert m["image_retrieval_recall@2"] == pytest.approx(1 / 4)
    assert m["image_retrieval_recall@3"] == pytest.approx(3 / 4)
    assert m["image_retrieval_recall@4"] == pytest.approx(3 / 4)


def test_ranks_keep_positive_ties_and_leave_out_queries_without_positives():
    from modalign.evaluate.ranks import NOT_FOUND, ranks_of_best_positive

    scores = torch.tensor([[0.9, 0.9, 0.1], [0.2, 0.5, 0.5], [float("nan"), 0.3, 0.1], [0.1, 0.2, 0.3]])
    positive = torch.tensor([[True, True, False], [False, True, False], [True, False, False],
                             [False, False, False]])
    # row 0: two positives tie with each other, no negative >= 0.9 -> rank 0 (a tie among right answers
    # is no miss); row 1: a negative ties -> 1; row 2: the positive is NaN -> not found; row 3: no positive
    assert ranks_of_best_positive(scores, positive).tolist() == [0, 1, NOT_FOUND, -1]


def test_clip_benchmark_accuracy_counts_ties_and_nan_as_misses():
    from modalign.integrations.clip_benchmark import _accuracy

    target = torch.tensor([0, 1, 2, 3])
    assert _accuracy(torch.zeros(4, 6), target, (1, 5)) == [0.0, 0.0]  # all classes tie
    assert _accuracy(torch.full((4, 6), float("nan")), target, (1,)) == [0.0]
    assert _accuracy(torch.eye(6)[:4] * 3, target, (1, 5)) == [1.0, 1.0]
