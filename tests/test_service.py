"""The search service: auth, search and embed routes, limits and clean 4xx errors (FastAPI TestClient
for the routes; a real uvicorn server on 127.0.0.1 for streaming bodies, load shedding and batching)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import select
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
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


SVG_STAMP = Path("/usr/share/tuxpaint/stamps/animals/birds/swallow.svg")  # one of 248 SVG stamps


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tux_images):
    """(index, model, images): 6 PNG stamps and one SVG stamp, indexed by a tiny real model."""
    from modalign.search.metadata import Item

    index, model = make_search_setup(tmp_path_factory.mktemp("svc"), tux_images[:6])
    index.add(model.encode_image([SVG_STAMP]).numpy(), [Item(SVG_STAMP.name, "image", str(SVG_STAMP))])
    return index, model, [*tux_images[:6], SVG_STAMP]


@pytest.fixture(scope="module")
def client(setup):
    index, model, images = setup
    app = create_app(index, model, ServiceConfig(api_key=KEY, max_batch=4, max_text_chars=50,
                                                 max_image_pixels=600 * 600, max_request_bytes=2 * 2**20))
    return TestClient(app), images[:6]


AUTH = {"Authorization": f"Bearer {KEY}"}


def test_health_is_open_and_the_rest_needs_the_key(client):
    c, _ = client
    assert c.get("/health").json() == {"status": "ok"}
    assert c.get("/ready").status_code == 401
    r = c.post("/search/text", json={"text": "a bird"})
    assert r.status_code == 401 and "API key" in r.json()["error"]
    assert c.post("/search/text", json={"text": "a bird"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/ready", headers={"X-API-Key": KEY}).json()["items"] == 7


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
    thumb = c.get(top["image_url"], headers=AUTH)
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


def test_serve_binds_to_this_machine_only_by_default_as_the_readme_says():
    from modalign.cli.main import build_parser

    args = build_parser(["serve", "idx"]).parse_args(["serve", "idx"])
    assert args.host == "127.0.0.1" and args.max_request_mb == 10 and args.max_inflight == 64
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "`127.0.0.1` by default" in readme and "Security model of `modalign serve`" in readme


def test_slow_requests_time_out_with_504(setup):
    index, model, _ = setup
    c = TestClient(create_app(index, model, ServiceConfig(api_key=KEY, timeout_s=0.001)))
    r = c.post("/search/text", json={"text": "a bird " * 20}, headers=AUTH)
    assert r.status_code == 504 and "longer than" in r.json()["error"]
    assert c.get("/health").status_code == 200


def test_lone_surrogates_and_control_characters_are_a_clear_400(client):
    c, _ = client
    for body in ('{"text": "a bird \\ud800"}', '{"texts": ["ok", "\\udfff x"]}', '{"text": "a\\u0000b"}',
                 '{"text": ["fine", "bell\\u0007"]}'):
        url = "/embed/text" if "texts" in body else "/search/text"
        r = c.post(url, content=body.encode(), headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 400, (body, r.status_code, r.text)
        assert "surrogate" in r.json()["error"] or "control character" in r.json()["error"]
    ok = c.post("/search/text", json={"text": "tab\tand newline\n and ünïcödé 鳥", "k": 1}, headers=AUTH)
    assert ok.status_code == 200


def test_the_key_is_never_accepted_in_a_url(client):
    c, _ = client
    assert c.get(f"/items/0/image?token={KEY}").status_code == 401
    assert c.get(f"/ready?token={KEY}").status_code == 401
    assert c.get("/items/0/image", headers=AUTH).status_code == 200
    page = c.get("/").text + c.get("/app.js").text
    assert "token=" not in page and "Authorization" in page and "createObjectURL" in page


def test_page_sends_security_headers_and_has_no_inline_code(client):
    c, _ = client
    for url in ("/", "/app.js", "/health"):
        h = c.get(url).headers
        assert "frame-ancestors 'none'" in h["content-security-policy"] and "'unsafe-inline'" not in \
            h["content-security-policy"]
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
    html = c.get("/").text
    assert "<script>" not in html and "<style>" not in html and " style=" not in html
    assert c.post("/search/text", json={"text": "x"}).headers["x-frame-options"] == "DENY"  # errors too


def test_huge_or_negative_item_ids_are_4xx_not_500(client):
    c, _ = client
    for vid in ("99999999999999999999999", str(2**63), "-1", "1e9", "nan"):
        r = c.get(f"/items/{vid}/image", headers=AUTH)
        assert r.status_code in (404, 422), (vid, r.status_code)
    assert c.get(f"/items/{2**63 - 1}/image", headers=AUTH).status_code == 404


def test_svg_items_get_a_png_thumbnail(client):
    c, _ = client
    r = c.post("/search/text", json={"text": "a swallow, a bird", "k": 7}, headers=AUTH)
    svg = [h for h in r.json()["results"] if h["key"].endswith(".svg")]
    assert len(svg) == 1
    thumb = c.get(svg[0]["image_url"], headers=AUTH)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    from PIL import Image

    img = Image.open(io.BytesIO(thumb.content))
    assert max(img.size) == 256 and img.getextrema() != ((255, 255), (255, 255), (255, 255))


# ---- a real server on 127.0.0.1: streamed bodies, load shedding, recovery, micro-batching -------------

@contextlib.contextmanager
def running(app):
    """Serves `app` with uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    uvicorn = pytest.importorskip("uvicorn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(400):
        if server.started:
            break
        time.sleep(0.025)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def send_chunked(base: str, path: str, content_type: str, total: int, prefix: bytes = b"") -> tuple[int, int]:
    """POSTs `total` bytes with chunked transfer encoding, stopping when the server answers or hangs up:
    (HTTP status, bytes the client got to send)."""
    port = int(base.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: "
                 f"{content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    chunk, sent = b"x" * 65536, 0
    if prefix:
        sock.sendall(b"%x\r\n" % len(prefix) + prefix + b"\r\n")
    try:
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break  # the answer is there: the server stopped reading
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sent += len(chunk)
        else:
            sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        head = sock.recv(65536).split(b"\r\n", 1)[0]
    except ConnectionResetError:
        head = b""
    sock.close()
    return (int(head.split()[1]) if head.startswith(b"HTTP/") else 0), sent


def test_chunked_bodies_are_cut_at_the_limit_on_every_route(setup):
    index, model, _ = setup
    limit = 2**20
    with running(create_app(index, model, ServiceConfig(api_key=KEY, max_request_bytes=limit))) as base:
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n'
        for path, ctype, prefix in (("/embed/text", "application/json", b'{"texts": ["'),
                                    ("/search/text", "application/json", b'{"text": "'),
                                    ("/search/image", "multipart/form-data; boundary=b", part),
                                    ("/embed/image", "multipart/form-data; boundary=b", part)):
            status, sent = send_chunked(base, path, ctype, 50 * 2**20, prefix)
            assert status == 413, (path, status)
            assert sent < 20 * 2**20, f"{path}: the server read {sent} bytes of a body over a {limit}-byte limit"
        assert httpx.get(base + "/health").status_code == 200


def _post_many(base: str, bodies: list[dict], timeout: float = 120) -> list[httpx.Response]:
    with httpx.Client(base_url=base, headers=AUTH, timeout=timeout) as http, \
            concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda b: http.post(b.pop("_url", "/search/text"), json=b), bodies))


def test_a_full_server_sheds_load_with_503_and_retry_after(setup):
    index, model, _ = setup
    with running(create_app(index, model, ServiceConfig(api_key=KEY, max_inflight=2))) as base:
        answers = _post_many(base, [{"text": f"a bird number {i}", "k": 3} for i in range(24)])
        codes = [r.status_code for r in answers]
        assert set(codes) <= {200, 503} and codes.count(503) >= 1 and codes.count(200) >= 2
        shed = next(r for r in answers if r.status_code == 503)
        assert int(shed.headers["retry-after"]) >= 1 and "busy" in shed.json()["error"]


def test_timed_out_work_is_dropped_and_the_server_is_usable_right_after(setup):
    """32 clients send the largest allowed request (64 texts of 1000 characters): what is refused (503) or
    times out (504) is never computed later, so a query right after the load is answered within the
    timeout (it waits at most for one bounded forward), and nothing is left queued."""
    index, model, _ = setup
    cfg = ServiceConfig(api_key=KEY, timeout_s=6.0, max_batch=64, max_text_chars=1000)
    big = [" ".join(f"word{j}" for j in range(i, i + 160))[:1000] for i in range(64)]
    with running(create_app(index, model, cfg)) as base:
        answers = _post_many(base, [{"_url": "/embed/text", "texts": big} for _ in range(32)])
        assert {r.status_code for r in answers} <= {200, 503, 504}
        assert sum(r.status_code in (503, 504) for r in answers) >= 16
        after = httpx.post(base + "/search/text", json={"text": "a red bird", "k": 2}, headers=AUTH, timeout=30)
        assert after.status_code == 200
        ready = httpx.get(base + "/ready", headers=AUTH).json()
        assert ready["queued"] == {"text": 0, "image": 0}


def test_concurrent_queries_share_forwards_and_each_gets_its_own_results(setup):
    index, model, _ = setup
    texts = ["a red bird", "a blue car", "a flower", "fruit", "a planet", "a dog", "a tree", "a boat"] * 2
    with running(create_app(index, model, ServiceConfig(api_key=KEY, batch_window_ms=20))) as base:
        alone = [httpx.post(base + "/search/text", json={"text": t, "k": 3}, headers=AUTH).json()["results"]
                 for t in texts[:8]]
        before = httpx.get(base + "/ready", headers=AUTH).json()["batches"]
        together = _post_many(base, [{"text": t, "k": 3 if i < 8 else 2} for i, t in enumerate(texts)])
        batches = httpx.get(base + "/ready", headers=AUTH).json()["batches"] - before
    assert all(r.status_code == 200 for r in together)
    assert batches < len(texts)  # shared forwards
    for i, r in enumerate(together):
        got, want = r.json()["results"], alone[i % 8][:3 if i < 8 else 2]
        assert [h["key"] for h in got] == [h["key"] for h in want]
        assert [h["score"] for h in got] == pytest.approx([h["score"] for h in want], abs=1e-4)


def test_work_behind_a_timed_out_request_is_never_run_and_a_started_one_stops_between_chunks(setup):
    """Issue 16, item 5, at the queue: a request that times out while queued costs no forward at all, and
    one that times out during a long encode stops at the next chunk boundary (`Dropped`)."""
    import asyncio

    from modalign.search.service.batching import Dropped, MicroBatcher
    from modalign.search.service.engine import Engine

    ran: list[list[str]] = []
    gate = threading.Event()

    def run_batch(jobs):
        gate.wait(10)  # the worker is busy with the first request meanwhile
        ran.append([x for j in jobs for x in j.items])
        return [None] * len(jobs)

    async def scenario() -> None:
        batcher = MicroBatcher(run_batch, 0.0, 8, 8192, 10_000, 4)
        first = asyncio.ensure_future(batcher.submit("text", ["first"], 1, 5))
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):  # queued behind `first`, times out before its turn
            await asyncio.wait_for(batcher.submit("text", ["late"], 1, 4), 0.1)
        gate.set()
        await first
        assert (await batcher.submit("text", ["next"], 1, 4))[0] is None
        assert batcher.queued == {"text": 0, "image": 0} and batcher.dropped == 1
        batcher.close()

    asyncio.run(scenario())
    assert ran == [["first"], ["next"]]  # "late" never reached the model

    from modalign.search.service.batching import Job

    class Counting:  # the real model, counting its forwards
        def __init__(self, model) -> None:
            self.model, self.towers, self.forwards = model, model.towers, 0

        def encode(self, modality, items, batch_size=32):
            self.forwards += 1
            job.cancelled = True  # the request times out during this forward
            return self.model.encode(modality, items, batch_size=batch_size)

    model = Counting(setup[1])
    job = Job("text", ["x" * 100] * 50, 1, 5000, asyncio.new_event_loop(), None)  # type: ignore[arg-type]
    with pytest.raises(Dropped):
        Engine(model, None, max_chars=1000, max_items=128).encode([job])  # type: ignore[arg-type]
    assert model.forwards == 1  # 5 chunks of 10 texts were due; the rest were never computed
