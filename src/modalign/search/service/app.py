"""create_app: the FastAPI app over one SearchIndex and the model that built it (or an upgrade)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from modalign.search.relevance import load_calibrations
from modalign.search.service import routes
from modalign.search.service.batching import MicroBatcher, Overloaded
from modalign.search.service.config import BadInput, ServiceConfig
from modalign.search.service.engine import Engine
from modalign.search.service.guard import Guard
from modalign.search.service.images import Thumbnails

logger = logging.getLogger(__name__)


def create_app(index: Any, model: Any, config: ServiceConfig, reranker: Any = None) -> FastAPI:
    """The app: `Guard` (headers, key, admission, body limit, timeout) around the routes; model work
    micro-batched on one worker thread (`MicroBatcher`), off the event loop."""
    engine = Engine(model, index, reranker, config.max_forward_chars, config.max_forward_items)
    batcher = MicroBatcher(engine.run, config.batch_window_ms / 1000, config.max_forward_items,
                           config.max_forward_chars, config.max_queued_chars, config.max_queued_images)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # the model, tokenizer and index are millions of long-lived objects: a full GC pass over them stalls
        # every request in flight (the tail of the latency); freezing them takes them out of the collector
        gc.collect()
        gc.freeze()
        yield
        batcher.close()
        gc.unfreeze()

    app = FastAPI(title="modalign search", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    ctx = routes.Context(config, index, model, batcher, Thumbnails(config.thumb_size, config.thumb_cache),
                         asyncio.Semaphore(config.decode_workers), reranker,
                         calibrations=load_calibrations(index.folder, index.info.space))
    routes.register(app, ctx)
    _register_errors(app)
    app.add_middleware(Guard, config=config, retry_after=batcher.retry_after)
    app.state.batcher = batcher
    return app


def _register_errors(app: FastAPI) -> None:
    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput) -> JSONResponse:
        return routes.error_response(exc.status, exc.message, exc.retry_after)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return routes.error_response(503, str(exc), exc.retry_after)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return routes.error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": [str(x) for x in e.get("loc", [])], "msg": str(e.get("msg", ""))} for e in exc.errors()]
        return JSONResponse({"error": "invalid request", "detail": detail}, status_code=422)
