"""The service's routes; request checks say what is wrong (4xx JSON {"error": ...}), never a 500.

    GET  /health               liveness (no key)
    GET  /ready                index facts + queue state
    POST /search/text          {"text": str | [str], "k": int, "min_relevance": P, "adaptive_k": bool, "k_max": int}
    POST /search/image         multipart `file`, ?k=&min_relevance=&adaptive_k=&k_max=  (cutting.py)
    POST /embed/text           {"texts": [str]}
    POST /embed/image          multipart `file`
    GET  /items/{id}/image     a PNG thumbnail of an indexed image (SVG included)
    GET  /, /app.js, /app.css  the web page (no key: it holds no data; it asks for the key)
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

import numpy as np
from fastapi import FastAPI, File, Path, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel

from modalign.search.service.batching import MicroBatcher
from modalign.search.service.config import BadInput, ServiceConfig
from modalign.search.service.cutting import finish, request_policy
from modalign.search.service.images import Thumbnails, decode_upload

WEB_DIR = FilePath(__file__).resolve().parents[1] / "web"
# C0 / C1 control characters but tab, newline, CR; and UTF-16 surrogates (never valid alone in a str)
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
MAX_VID = 2**63 - 1  # SQLite's INTEGER range: larger ids cannot exist (422, not a 500)


class TextQuery(BaseModel):
    text: str | list[str]  # one query, or a batch
    k: int = 10
    min_relevance: float | None = None  # only hits with calibrated relevance >= this
    adaptive_k: bool = False  # cut at the largest gap of the score curve
    k_max: int | None = None  # at most this many hits with either rule (default min(50, max_k))


class Texts(BaseModel):
    texts: list[str]


@dataclass
class Context:
    config: ServiceConfig
    index: Any  # SearchIndex
    model: Any  # AlignedModel
    batcher: MicroBatcher
    thumbnails: Thumbnails
    decoding: asyncio.Semaphore  # uploads decoded at once
    reranker: Any = None
    calibrations: dict[str, Any] = field(default_factory=dict)  # query modality -> RelevanceCalibration


def check_text(text: str, limit: int) -> None:
    """400 for an empty text, a lone surrogate or a control character (NUL ...); 413 when too long."""
    if not text.strip():
        raise BadInput(400, "empty text")
    if len(text) > limit:
        raise BadInput(413, f"a text of {len(text)} characters; the limit is {limit}")
    bad = _BAD_CHARS.search(text)
    if bad is not None:
        ch, at = bad.group(), bad.start()
        if "\ud800" <= ch <= "\udfff":
            raise BadInput(400, f"text has a lone surrogate (U+{ord(ch):04X}) at position {at}: send valid "
                                f"Unicode (UTF-8)")
        raise BadInput(400, f"text has the control character U+{ord(ch):04X} at position {at}; remove it")


def check_texts(texts: list[str], config: ServiceConfig) -> list[str]:
    if not texts:
        raise BadInput(400, "no text given")
    if len(texts) > config.max_batch:
        raise BadInput(413, f"{len(texts)} texts; the batch limit is {config.max_batch}")
    for t in texts:
        check_text(t, config.max_text_chars)
    return texts


def check_k(k: int, config: ServiceConfig) -> int:
    if not 1 <= k <= config.max_k:
        raise BadInput(400, f"k must be between 1 and {config.max_k}; got {k}")
    return k


def answer(content: dict[str, Any], timing: dict[str, float]) -> JSONResponse:
    """The JSON answer, sent as is (no response-model pass: that cost more than the search), with where its
    time went (queue wait, encode, search) in Server-Timing, for clients and benchmarks."""
    return JSONResponse(content, headers={"Server-Timing": ", ".join(f"{k};dur={v:.2f}" for k, v in timing.items())})


def hits_json(hits: list[Any]) -> list[dict[str, Any]]:
    return [{**h.to_dict(), "image_url": f"/items/{h.item.vid}/image" if h.item.path else None} for h in hits]


async def read_image(ctx: Context, file: UploadFile) -> np.ndarray:
    data = await file.read(ctx.config.max_request_bytes + 1)
    if len(data) > ctx.config.max_request_bytes:
        raise BadInput(413, f"upload exceeds {ctx.config.max_request_bytes} bytes")
    async with ctx.decoding:
        return await asyncio.to_thread(decode_upload, data, ctx.config.max_image_pixels)


def register(app: FastAPI, ctx: Context) -> None:
    _register_info(app, ctx)
    _register_text(app, ctx)
    _register_image(app, ctx)
    _register_page(app)


def _register_info(app: FastAPI, ctx: Context) -> None:
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> dict[str, Any]:
        info = ctx.index.info
        return {"ready": True, "items": len(ctx.index), "modality": info.modality, "kind": info.kind,
                "embed_dim": info.embed_dim, "invgc": ctx.reranker is not None,
                "relevance": sorted(ctx.calibrations),
                "queued": dict(ctx.batcher.queued), "batches": ctx.batcher.batches,
                "dropped": ctx.batcher.dropped}

    @app.get("/items/{vid}/image")
    async def item_image(vid: int = Path(ge=0, le=MAX_VID)) -> Response:
        async with ctx.decoding:
            items = await asyncio.to_thread(ctx.index.items.get, [vid])
            if vid not in items or not items[vid].path:
                raise BadInput(404, f"no indexed image with id {vid}")
            png = await asyncio.to_thread(ctx.thumbnails.get, items[vid].path)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


def _register_text(app: FastAPI, ctx: Context) -> None:
    @app.post("/search/text")
    async def search_text(q: TextQuery) -> JSONResponse:
        texts = check_texts([q.text] if isinstance(q.text, str) else q.text, ctx.config)
        k = check_k(q.k, ctx.config)
        if "text" not in ctx.model.towers:
            raise BadInput(400, "this model has no text tower")
        cal = ctx.calibrations.get("text")
        policy = request_policy(k, q.min_relevance, q.adaptive_k, q.k_max, ctx.config, cal)
        (_, hits), timing = await ctx.batcher.submit("text", texts, policy.fetch, sum(map(len, texts)))
        hits = finish(hits, cal, policy)
        if isinstance(q.text, str):
            return answer({"results": hits_json(hits[0])}, timing)
        return answer({"results": [hits_json(h) for h in hits]}, timing)

    @app.post("/embed/text")
    async def embed_text(body: Texts) -> JSONResponse:
        texts = check_texts(body.texts, ctx.config)
        (vecs, _), timing = await ctx.batcher.submit("text", texts, 0, sum(map(len, texts)))
        return answer({"embeddings": vecs.round(6).tolist(), "dim": int(vecs.shape[1])}, timing)


def _register_image(app: FastAPI, ctx: Context) -> None:
    @app.post("/search/image")
    async def search_image(file: UploadFile = File(...), k: int = 10, min_relevance: float | None = None,
                           adaptive_k: bool = False, k_max: int | None = None) -> JSONResponse:
        k = check_k(k, ctx.config)
        cal = ctx.calibrations.get("image")
        policy = request_policy(k, min_relevance, adaptive_k, k_max, ctx.config, cal)
        img = await read_image(ctx, file)
        (_, hits), timing = await ctx.batcher.submit("image", [img], policy.fetch, 1)
        hits = finish(hits, cal, policy)
        return answer({"results": hits_json(hits[0])}, timing)

    @app.post("/embed/image")
    async def embed_image(file: UploadFile = File(...)) -> JSONResponse:
        img = await read_image(ctx, file)
        (vecs, _), timing = await ctx.batcher.submit("image", [img], 0, 1)
        return answer({"embeddings": vecs.round(6).tolist(), "dim": int(vecs.shape[1])}, timing)


def _register_page(app: FastAPI) -> None:
    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    @app.get("/app.js")
    async def script() -> FileResponse:
        return FileResponse(WEB_DIR / "app.js", media_type="text/javascript")

    @app.get("/app.css")
    async def style() -> FileResponse:
        return FileResponse(WEB_DIR / "app.css", media_type="text/css")


def error_response(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)
