"""`modalign serve INDEX --port 8000`: the search service (FastAPI + uvicorn) and its web page."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from modalign.cli.commands import summary
from modalign.cli.common import add_common

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help=summary("serve"),
                       description="Routes: GET /health, GET /ready, POST /search/text, POST /search/image, "
                                   "POST /embed/text, POST /embed/image, GET /items/{id}/image, GET /. "
                                   "All but /health and the page need the API key (--api-key or $MODALIGN_API_KEY) "
                                   "as 'Authorization: Bearer KEY' or 'X-API-Key: KEY' (never in a URL).")
    p.add_argument("index", type=Path)
    p.add_argument("--model", type=Path, help="query model (default: the index's; a compatible upgrade is accepted)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="API key (default: $MODALIGN_API_KEY)")
    p.add_argument("--no-auth", action="store_true", help="serve WITHOUT an API key (local experiments only)")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--max-text-chars", type=int, default=1000)
    p.add_argument("--max-image-pixels", type=int, default=40_000_000)
    p.add_argument("--max-request-mb", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds (work not "
                                                               "started by then is dropped)")
    p.add_argument("--max-inflight", type=int, default=64, help="requests served at once; more get 503 + "
                                                                "Retry-After")
    p.add_argument("--batch-window-ms", type=float, default=3.0, help="how long a query waits for others to "
                                                                      "share its model forward")
    p.add_argument("--invgc", choices=["off", "invgc", "localadj"], default="off")
    add_common(p, store=False)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from modalign.cli.loading import reranker_for
    from modalign.errors import ConfigError
    from modalign.model import AlignedModel
    from modalign.search.index import SearchIndex
    from modalign.search.service import ServiceConfig, create_app

    key = args.api_key or os.environ.get("MODALIGN_API_KEY")
    if not key and not args.no_auth:
        raise ConfigError("refusing to serve without an API key: pass --api-key KEY or set MODALIGN_API_KEY "
                          "(or --no-auth for a local experiment)")
    if args.no_auth:
        logger.warning("!!! serving WITHOUT authentication (--no-auth): anyone who reaches %s:%d can query "
                       "and read the indexed images !!!", args.host, args.port)
    index = SearchIndex.open(args.index)
    model_dir = args.model or Path(index.info.model)
    index.check_model(model_dir)
    model = AlignedModel.from_pretrained(model_dir, device=args.device)
    for modality in model.towers:
        model.encoder(modality)  # load the encoders before /ready says yes
    cfg = ServiceConfig(api_key=key, no_auth=args.no_auth, max_request_bytes=int(args.max_request_mb * 2**20),
                        max_batch=args.max_batch, max_text_chars=args.max_text_chars,
                        max_image_pixels=args.max_image_pixels, timeout_s=args.timeout,
                        max_inflight=args.max_inflight, batch_window_ms=args.batch_window_ms)
    app = create_app(index, model, cfg, reranker=reranker_for(index, model, args.invgc))
    logger.info("serving %s (%d %s items) on http://%s:%d/", args.index, len(index), index.info.modality,
                args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
