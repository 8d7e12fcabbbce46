"""`modalign adapt` end to end on real images, and the adapted classifier's save / reload / predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modalign.align.projectors import ProjectorConfig
from modalign.cli.main import main
from modalign.data.registry import load_labelled_dataset
from modalign.encoders import create_encoder
from modalign.errors import MismatchError, NotFoundError
from modalign.model import AlignedModel, TowerConfig
from modalign.store import EmbeddingStore
from modalign.workflows.adapt import draw_shots, embed_labelled, fit_adapter, stratified_split
from modalign.workflows.classifier import AdaptedClassifier, adapter_dir


def _tiny_model(seed: int = 0) -> AlignedModel:
    """effnet-lite0 + minilm-l6 with random 64-d linear projectors (a random projection keeps the geometry)."""
    torch.manual_seed(seed)
    encs = {"image": create_encoder("effnet-lite0"), "text": create_encoder("minilm-l6")}
    proj = ProjectorConfig(type="linear", out_dim=64, standardize=False)
    towers = {m: TowerConfig(m, e.spec, "final", e.dim, e.fingerprint(), proj) for m, e in encs.items()}
    model = AlignedModel(towers)
    for m, e in encs.items():
        model.set_encoder(m, e)
    return model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    _tiny_model().save_pretrained(out)
    return out


def test_shot_draws_are_disjoint_per_class_and_seeded():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 1)
    pool, test = stratified_split(labels, 0.3, seed=0)
    assert set(pool).isdisjoint(test) and sorted([*pool, *test]) == list(range(14))
    assert (labels[test] == 2).sum() == 0  # a class with one item keeps it in the pool
    shots, val = draw_shots(labels, pool, 2, 2, np.random.default_rng(5))
    again = draw_shots(labels, pool, 2, 2, np.random.default_rng(5))
    assert np.array_equal(shots, again[0]) and np.array_equal(val, again[1])
    assert set(shots).isdisjoint(val) and set(shots) <= set(pool) and set(val) <= set(pool)
    assert [int((labels[shots] == c).sum()) for c in range(3)] == [2, 2, 1]  # capped by what a class has


def test_cli_compares_heads_over_shots_on_fashion_mnist(tmp_path, run_dir, fashion_root, capsys):
    out = tmp_path / "fewshot.json"
    rc = main(["adapt", str(run_dir), "--images", "fashion-mnist?per_class=8", "--shots", "1,2", "--draws", "2",
               "--test-fraction", "0.5", "--json", str(out), "--store", str(tmp_path / "store"), "-q"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "few-shot test acc1" in printed and "prototype" in printed
    r = json.loads(out.read_text())
    assert r["n_test"] == 40 and r["n_pool"] == 40
    assert set(r["summary"]) == {"zeroshot", "probe", "cache", "prototype"}
    assert len(r["records"]) == 2 * 2 * 3  # shots x draws x heads
    for cells in r["summary"].values():
        for k in ("1", "2"):
            assert 0 <= cells[k]["acc1"] <= 1 and cells[k]["acc1_std"] >= 0
    assert r["summary"]["zeroshot"]["1"]["acc1"] == r["summary"]["zeroshot"]["2"]["acc1"]
    # a random 64-d projection of effnet features keeps Fashion-MNIST's classes apart: 2 shots beat chance
    assert r["summary"]["probe"]["2"]["acc1"] > 0.2 and r["summary"]["cache"]["2"]["acc1"] > 0.2
    assert out.with_suffix(".png").stat().st_size > 5000


def test_saved_classifier_reloads_next_to_the_model_and_predicts_images(tmp_path, run_dir, image_tree, tux_images):
    model = AlignedModel.from_pretrained(run_dir)
    dataset = load_labelled_dataset(str(image_tree))
    embedded = embed_labelled(model, dataset, EmbeddingStore(tmp_path / "store"), progress=False)
    clf = fit_adapter(model, embedded, "probe")
    folder = clf.save(adapter_dir(run_dir, "tree-probe"))
    assert folder == run_dir / "adapters" / "tree-probe" and (folder / "adapter.json").is_file()

    loaded = AdaptedClassifier.load(folder)  # the model comes from the run folder two levels up
    images = [str(p) for p in tux_images[:6]]
    names = loaded.predict(images)
    assert names == clf.predict(images) and set(names) <= set(dataset.classnames)
    proba = loaded.predict_proba(images)
    assert proba.shape == (6, len(dataset.classnames)) and torch.allclose(proba.sum(1), torch.ones(6), atol=1e-5)
    # the probe was refitted on all 12 labelled images: it classifies its own training images right
    emb = model.encode_image([dataset.column.items[i] for i in range(len(dataset))])
    assert (loaded.predict_embeddings(emb).numpy() == dataset.labels).mean() > 0.8

    with pytest.raises(MismatchError, match="another model's embeddings"):
        AdaptedClassifier.load(folder, model=_tiny_model(seed=1))
    with pytest.raises(NotFoundError, match="modalign adapt RUN"):
        AdaptedClassifier.load(tmp_path)


def test_cli_save_writes_a_loadable_adapter(tmp_path, run_dir, image_tree, capsys):
    rc = main(["adapt", str(run_dir), "--images", str(image_tree), "--save", "tree-cache", "--method", "cache",
               "--store", str(tmp_path / "store"), "-q"])
    assert rc == 0 and "saved the cache classifier (6 classes" in capsys.readouterr().out
    clf = AdaptedClassifier.load(run_dir / "adapters" / "tree-cache")
    assert clf.head.kind == "cache" and clf.metadata["images"] == str(image_tree)
