"""The search service: a FastAPI app over one SearchIndex and the model that built it (or an upgrade).

    app = create_app(index, model, ServiceConfig(api_key="..."))       # `modalign serve INDEX` runs it

Routes: GET /health (no auth), GET /ready, POST /search/text, POST /search/image (multipart),
POST /embed/text, POST /embed/image, GET /items/{id}/image (a thumbnail), GET / (the web page).
All but /health and / need the API key: `Authorization: Bearer KEY` or `X-API-Key: KEY`, or
`?token=KEY` on /items/{id}/image (an <img> tag cannot send headers). Bad input gets a 4xx JSON
{"error": ...}; model work runs in a thread pool under a per-request timeout.
This module imports FastAPI at its top (route signatures need the types at module level): import it
only where the service is wanted (`modalign serve`, tests); `import modalign` never does.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"


@dataclass
class ServiceConfig:
    api_key: str | None  # None only with no_auth
    no_auth: bool = False  # serve without a key (local experiments only)
    max_request_bytes: int = 10 * 2**20  # whole request body
    max_batch: int = 64  # texts per /embed/text or /search/text call
    max_text_chars: int = 1000  # per text
    max_image_pixels: int = 40_000_000  # width * height of an uploaded image
    max_k: int = 100
    timeout_s: float = 30.0  # per request, model work included
    thumb_size: int = 256  # longest side of /items/{id}/image


class BadInput(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class TextQuery(BaseModel):
    text: str | list[str]  # one query, or a batch
    k: int = 10


class Texts(BaseModel):
    texts: list[str]


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Uploaded bytes -> (H, W, 3) uint8; 415 for what is not an image, 413 for too many pixels."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadInput(400, "empty image upload")
    try:
        img: Image.Image = Image.open(io.BytesIO(data))
        w, h = img.size
        if w * h > max_pixels:
            raise BadInput(413, f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
        img.load()
        if img.mode in ("RGBA", "LA", "P"):
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img)
        return np.asarray(img.convert("RGB"))
    except BadInput:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise BadInput(415, f"could not read the upload as an image: {e}") from e


def create_app(index: Any, model: Any, config: ServiceConfig, reranker: Any = None) -> Any:
    if not config.no_auth and not config.api_key:
        raise ValueError("the service needs an API key (or no_auth=True)")
    app = FastAPI(title="modalign search", docs_url=None, redoc_url=None)
    lock = threading.Lock()  # one model / index call at a time: torch and sqlite are not shared safely
    state = {"ready": False}

    def authorized(request: Request) -> bool:
        if config.no_auth:
            return True
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        if not given and request.url.path.startswith("/items/"):
            given = request.query_params.get("token", "")
        return bool(given) and hmac.compare_digest(given.encode(), str(config.api_key).encode())

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        open_path = path in ("/health", "/", "/favicon.ico")
        if not open_path and not authorized(request):
            return JSONResponse({"error": "missing or wrong API key: send 'Authorization: Bearer KEY' "
                                          "or 'X-API-Key: KEY'"}, status_code=401)
        size = request.headers.get("content-length")
        if size and size.isdigit() and int(size) > config.max_request_bytes:
            return JSONResponse({"error": f"request body of {size} bytes exceeds the limit of "
                                          f"{config.max_request_bytes}"}, status_code=413)
        try:
            return await asyncio.wait_for(call_next(request), timeout=config.timeout_s)
        except TimeoutError:
            return JSONResponse({"error": f"request took longer than {config.timeout_s} s"}, status_code=504)

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": "invalid request", "detail": _plain(exc.errors())}, status_code=422)

    def run_locked(fn, *a):
        with lock:
            return fn(*a)

    async def work(fn, *a):
        return await asyncio.to_thread(run_locked, fn, *a)

    def check_texts(texts: list[str]) -> list[str]:
        if not texts:
            raise BadInput(400, "no text given")
        if len(texts) > config.max_batch:
            raise BadInput(413, f"{len(texts)} texts; the batch limit is {config.max_batch}")
        for t in texts:
            if not t.strip():
                raise BadInput(400, "empty text")
            if len(t) > config.max_text_chars:
                raise BadInput(413, f"a text of {len(t)} characters; the limit is {config.max_text_chars}")
        return texts

    def check_k(k: int) -> int:
        if not 1 <= k <= config.max_k:
            raise BadInput(400, f"k must be between 1 and {config.max_k}; got {k}")
        return k

    def hits_json(hits) -> list[dict[str, Any]]:
        return [{**h.to_dict(), "image_url": f"/items/{h.item.vid}/image" if h.item.path else None} for h in hits]

    def search(vectors: np.ndarray, k: int) -> list[list[Any]]:
        return index.search(vectors, k, rerank=reranker)

    async def read_image(file: UploadFile) -> np.ndarray:
        data = await file.read(config.max_request_bytes + 1)
        if len(data) > config.max_request_bytes:
            raise BadInput(413, f"upload exceeds {config.max_request_bytes} bytes")
        return decode_image(data, config.max_image_pixels)

    def embed(modality: str, items: list[Any]) -> np.ndarray:
        return model.encode(modality, items).cpu().numpy()

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if not state["ready"]:
            return JSONResponse({"ready": False}, status_code=503)
        return {"ready": True, "items": len(index), "modality": index.info.modality, "kind": index.info.kind,
                "embed_dim": index.info.embed_dim, "invgc": reranker is not None}

    @app.post("/search/text")
    async def search_text(q: TextQuery):
        texts = check_texts([q.text] if isinstance(q.text, str) else q.text)
        k = check_k(q.k)
        if "text" not in model.towers:
            raise BadInput(400, "this model has no text tower")
        vecs = await work(embed, "text", texts)
        results = await work(search, vecs, k)
        return {"results": [hits_json(h) for h in results]} if len(texts) > 1 else {"results": hits_json(results[0])}

    @app.post("/search/image")
    async def search_image(file: UploadFile = File(...), k: int = 10):
        k = check_k(k)
        img = await read_image(file)
        vecs = await work(embed, "image", [img])
        results = await work(search, vecs, k)
        return {"results": hits_json(results[0])}

    @app.post("/embed/text")
    async def embed_text(body: Texts):
        vecs = await work(embed, "text", check_texts(body.texts))
        return {"embeddings": vecs.round(6).tolist(), "dim": int(vecs.shape[1])}

    @app.post("/embed/image")
    async def embed_image(file: UploadFile = File(...)):
        vecs = await work(embed, "image", [await read_image(file)])
        return {"embeddings": vecs.round(6).tolist(), "dim": int(vecs.shape[1])}

    @app.get("/items/{vid}/image")
    async def item_image(vid: int):
        items = await work(index.items.get, [vid])
        if vid not in items or not items[vid].path:
            raise BadInput(404, f"no indexed image with id {vid}")
        return Response(await asyncio.to_thread(_thumbnail, items[vid].path, config.thumb_size),
                        media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/")
    async def page():
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    state["ready"] = True
    return app


def _thumbnail(path: str, size: int) -> bytes:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            return buf.getvalue()
    except OSError as e:
        raise BadInput(404, f"the indexed image file cannot be read: {e}") from e


def _plain(errors: Any) -> Any:
    return [{"loc": list(e.get("loc", [])), "msg": str(e.get("msg", ""))} for e in errors]
