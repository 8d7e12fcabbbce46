"""Training straight from the store's memory-mapped shards equals training on loaded features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalign.align.projectors import ProjectorConfig
from modalign.align.streaming import StreamedFeatures
from modalign.align.trainer import TrainConfig
from modalign.data.pairs import load_pairs
from modalign.encoders import create_encoder
from modalign.features.pipeline import encode_dataset, feature_set, streamed_feature_set
from modalign.model import TowerConfig
from modalign.store import EmbeddingStore
from modalign.workflows.methods import fit_method


def test_streamed_training_matches_in_memory(tmp_path, pairs_dir):
    data = load_pairs(pairs_dir / "pairs.csv")
    encoders = {"image": create_encoder("effnet-lite0"), "text": create_encoder("minilm-l6")}
    stored = encode_dataset(data, encoders, EmbeddingStore(tmp_path / "store"), progress=False)
    groups = np.arange(data.n_groups)
    loaded, streamed = feature_set(data, stored, groups), streamed_feature_set(data, stored, groups)
    assert isinstance(streamed.features["image"], StreamedFeatures)
    idx = torch.tensor([3, 0, 7])
    assert torch.equal(streamed.features["image"][idx], loaded.features["image"][idx])

    proj = ProjectorConfig(out_dim=16, hidden_dim=32, dropout=0.0)
    towers = {m: TowerConfig(m, e.spec, "final", e.dim, e.fingerprint(), proj) for m, e in encoders.items()}
    cfg = TrainConfig(epochs=4, batch_size=6, patience=0, seed=1)
    m_loaded, info_loaded = fit_method("mlp", towers, loaded, None, cfg, progress=False)
    m_streamed, info_streamed = fit_method("mlp", towers, streamed, None, cfg, progress=False)
    losses = [r["train_loss"] for r in info_loaded["result"].history]
    assert [r["train_loss"] for r in info_streamed["result"].history] == pytest.approx(losses, rel=1e-5)
    x = loaded.features["image"]
    torch.testing.assert_close(m_streamed.project("image", x), m_loaded.project("image", x), rtol=1e-4, atol=1e-5)


def test_random_rows_from_many_small_shards(tmp_path, tux_images, monkeypatch):
    """A random batch over an entry of many small shards: grouped by shard in one pass, read through
    positioned reads once a shard's map is closed, returned in the order asked, damage still named."""
    from conftest import caption_of
    from modalign.data.column import Column
    from modalign.errors import MismatchError
    from modalign.store import embeddings

    captions = [caption_of(p) for p in tux_images]
    col = Column("text", [p.name for p in tux_images], captions, np.arange(len(captions)))
    enc = create_encoder("minilm-l6")
    store = EmbeddingStore(tmp_path / "store")
    monkeypatch.setattr(embeddings, "MAX_OPEN_SHARDS", 1)  # every shard but the last read is closed again
    for dtype in ("float32", "float16"):
        entry = store.encode(col, enc, dtype=dtype, batch_size=2, shard_size=3, progress=False)["final"]
        assert entry.layout.n_shards == 4
        full = np.concatenate([np.load(entry.path / f"shard-{i:06d}.npy").astype(np.float32) for i in range(4)])
        rows = np.array([7, 0, 11, 7, -1, 4, 5, 3, 10, 1])  # unsorted, a duplicate, a negative row
        fresh = store.get(col, enc, dtype=dtype)
        np.testing.assert_array_equal(fresh.vectors(rows), full[rows])  # first reads: through the maps
        np.testing.assert_array_equal(fresh.vectors(rows[::-1]), full[rows[::-1]])  # again: positioned reads
        np.testing.assert_array_equal(fresh.vectors(), full)
        assert len(fresh._open) == 1
    (entry.path / "shard-000002.npy").write_bytes((entry.path / "shard-000002.npy").read_bytes()[:200])
    with pytest.raises(MismatchError, match="shard-000002"):
        fresh.vectors(np.array([8, 1]))
