"""The search service: auth, search and embed routes, limits and clean 4xx errors (FastAPI TestClient)."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the search extra (fastapi) is not installed")
pytest.importorskip("faiss", reason="the search extra (faiss-cpu) is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from modalign.align.projectors import ProjectorConfig  # noqa: E402
from modalign.encoders import create_encoder  # noqa: E402
from modalign.model import AlignedModel, TowerConfig  # noqa: E402
from modalign.search.build import build_index, load_collection  # noqa: E402
from modalign.search.service import ServiceConfig, create_app  # noqa: E402
from modalign.store import EmbeddingStore  # noqa: E402

KEY = "test-key-123"


def make_search_setup(root, images):
    """A tiny model (linear projectors, 64-d) and a flat index of `images`: (index, model)."""
    torch.manual_seed(0)
    encs = {"image": create_encoder("effnet-lite0"), "text": create_encoder("minilm-l6")}
    proj = ProjectorConfig(type="linear", out_dim=64, standardize=False)
    towers = {m: TowerConfig(m, e.spec, "final", e.dim, e.fingerprint(), proj) for m, e in encs.items()}
    model = AlignedModel(towers)
    model.save_pretrained(root / "model")
    for m, e in encs.items():
        model.set_encoder(m, e)
    img_dir = root / "imgs"
    img_dir.mkdir()
    for p in images:
        shutil.copy(p, img_dir / p.name)
    index = build_index(root / "model", load_collection(str(img_dir)), root / "index", EmbeddingStore(root / "s"),
                        progress=False, model=model)
    return index, model


@pytest.fixture(scope="module")
def client(tmp_path_factory, tux_images):
    index, model = make_search_setup(tmp_path_factory.mktemp("svc"), tux_images[:6])
    app = create_app(index, model, ServiceConfig(api_key=KEY, max_batch=4, max_text_chars=50,
                                                 max_image_pixels=600 * 600, max_request_bytes=2 * 2**20))
    return TestClient(app), tux_images[:6]


AUTH = {"Authorization": f"Bearer {KEY}"}


def test_health_is_open_and_the_rest_needs_the_key(client):
    c, _ = client
    assert c.get("/health").json() == {"status": "ok"}
    assert c.get("/ready").status_code == 401
    r = c.post("/search/text", json={"text": "a bird"})
    assert r.status_code == 401 and "API key" in r.json()["error"]
    assert c.post("/search/text", json={"text": "a bird"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/ready", headers={"X-API-Key": KEY}).json()["items"] == 6


def test_search_text_and_image(client):
    c, images = client
    r = c.post("/search/text", json={"text": "a red bird", "k": 3}, headers=AUTH)
    assert r.status_code == 200
    hits = r.json()["results"]
    assert len(hits) == 3 and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    with open(images[2], "rb") as f:
        r = c.post("/search/image?k=2", files={"file": ("x.png", f, "image/png")}, headers=AUTH)
    assert r.status_code == 200
    top = r.json()["results"][0]
    assert top["key"] == images[2].name and top["score"] == pytest.approx(1.0, abs=1e-3)
    thumb = c.get(top["image_url"] + f"?token={KEY}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    assert c.get(top["image_url"]).status_code == 401


def test_embed_routes(client):
    c, images = client
    r = c.post("/embed/text", json={"texts": ["a", "b"]}, headers=AUTH)
    emb = np.array(r.json()["embeddings"])
    assert emb.shape == (2, 64) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    with open(images[0], "rb") as f:
        r = c.post("/embed/image", files={"file": ("a.png", f, "image/png")}, headers=AUTH)
    assert r.status_code == 200 and r.json()["dim"] == 64


def test_bad_input_gives_clear_4xx(client):
    c, _ = client
    r = c.post("/search/image", files={"file": ("x.png", b"not an image at all", "image/png")}, headers=AUTH)
    assert r.status_code == 415 and "image" in r.json()["error"]
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1000, 1000)).save(buf, format="PNG")
    r = c.post("/embed/image", files={"file": ("big.png", buf.getvalue(), "image/png")}, headers=AUTH)
    assert r.status_code == 413 and "pixels" in r.json()["error"]
    assert c.post("/embed/text", json={"texts": ["x"] * 5}, headers=AUTH).status_code == 413
    assert c.post("/embed/text", json={"texts": ["x" * 51]}, headers=AUTH).status_code == 413
    assert c.post("/search/text", json={"text": "bird", "k": 0}, headers=AUTH).status_code == 400
    assert c.post("/search/text", json={"nope": 1}, headers=AUTH).status_code == 422
    r = c.post("/embed/text", content=b"x" * (3 * 2**20), headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert c.get("/items/999/image", headers=AUTH).status_code == 404
    assert c.get("/health").status_code == 200  # still alive


def test_serve_refuses_to_start_without_a_key(tmp_path, monkeypatch):
    from modalign.cli.main import main

    monkeypatch.delenv("MODALIGN_API_KEY", raising=False)
    assert main(["serve", str(tmp_path / "nowhere"), "-q"]) == 1


def test_slow_requests_time_out_with_504(tmp_path, tux_images):
    index, model = make_search_setup(tmp_path, tux_images[:2])
    app = create_app(index, model, ServiceConfig(api_key=KEY, timeout_s=0.001))
    c = TestClient(app)
    r = c.post("/search/text", json={"text": "a bird " * 20}, headers=AUTH)
    assert r.status_code == 504 and "longer than" in r.json()["error"]
    assert c.get("/health").status_code == 200
