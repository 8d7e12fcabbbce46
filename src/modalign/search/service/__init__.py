"""The search service: a FastAPI app over one SearchIndex and its model (`modalign serve INDEX`).

    app = create_app(index, model, ServiceConfig(api_key="..."))

Modules, one job each:
  config.py    ServiceConfig (limits, queue sizes, batching window) and BadInput (a 4xx with a message)
  guard.py     plain ASGI middleware: security headers, API key (headers only), admission (503 +
               Retry-After), body limit while streaming, per-request timeout
  batching.py  MicroBatcher: concurrent requests share one forward on a worker thread; bounded queue
  engine.py    one micro-batch: one encoder forward + one index search
  images.py    uploads and thumbnails through the guarded image decoder (SVG included)
  routes.py    the routes and their request checks
  cutting.py   calibrated relevance and adaptive top-k per request (search/relevance.py)
  app.py       create_app wires them
FastAPI is imported here (route signatures need it): import this package only where the service is
wanted (`modalign serve`, tests); `import modalign` never does.
"""

from __future__ import annotations

from modalign.search.service.app import create_app
from modalign.search.service.config import BadInput, ServiceConfig
from modalign.search.service.images import decode_upload

__all__ = ["BadInput", "ServiceConfig", "create_app", "decode_upload"]
