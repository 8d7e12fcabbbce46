"""encode_on_ray: Ray actors fill one store entry with the same vectors a one-process encode computes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from modalign.data.column import Column
from modalign.encoders import create_encoder
from modalign.store import EmbeddingStore
from modalign.store.shards import vectors_path

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'modalign[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def _column(tux_root: Path, n: int = 16) -> Column:
    pngs = sorted(p for p in (tux_root / "animals").rglob("*.png"))[:n]
    assert len(pngs) == n
    return Column("image", [str(p.relative_to(tux_root)) for p in pngs], pngs, np.arange(n))


def test_ray_encode_matches_store_and_resumes(local_ray, tux_root: Path, tmp_path: Path) -> None:
    from modalign.distributed.ray_encode import encode_on_ray

    column = _column(tux_root)
    store = EmbeddingStore(tmp_path / "ray")
    out = encode_on_ray(store, column, "effnet-lite0", ["final"], num_workers=2, shard_size=4, batch_size=4)
    emb = out["final"]
    assert emb.report.shards_written == 4 and emb.report.shards_reused == 0

    plain = EmbeddingStore(tmp_path / "plain").encode(column, create_encoder("effnet-lite0"), ["final"],
                                                       shard_size=4, batch_size=4, num_workers=0,
                                                       progress=False)["final"]
    assert emb.key == plain.key  # same entry name in either store
    np.testing.assert_allclose(emb.vectors(), plain.vectors(), rtol=1e-5, atol=1e-6)
    assert emb.valid.all() and np.abs(emb.vectors()).sum(axis=1).min() > 0

    # a shard lost (a killed worker): the rerun computes only that one and leaves the others untouched
    folder = emb.path
    mtimes = {i: os.stat(vectors_path(folder, i)).st_mtime_ns for i in (0, 1, 3)}
    vectors_path(folder, 2).unlink()
    again = encode_on_ray(store, column, "effnet-lite0", ["final"], num_workers=2, shard_size=4,
                          batch_size=4)["final"]
    assert again.report.shards_written == 1 and again.report.shards_reused == 3
    assert vectors_path(folder, 2).exists()
    assert {i: os.stat(vectors_path(folder, i)).st_mtime_ns for i in (0, 1, 3)} == mtimes
    np.testing.assert_allclose(again.vectors(), plain.vectors(), rtol=1e-5, atol=1e-6)
