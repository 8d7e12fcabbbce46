"""The service's settings and its one error type (a 4xx / 5xx with a message)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServiceConfig:
    api_key: str | None  # None only with no_auth
    no_auth: bool = False  # serve without a key (local experiments only)
    max_request_bytes: int = 10 * 2**20  # whole request body, counted while it streams (chunked too)
    max_batch: int = 64  # texts per /embed/text or /search/text call
    max_text_chars: int = 1000  # per text
    max_image_pixels: int = 40_000_000  # width * height of an uploaded image
    max_k: int = 100
    timeout_s: float = 30.0  # per request; work not started by then is dropped, never run
    thumb_size: int = 256  # longest side of /items/{id}/image
    max_inflight: int = 64  # requests admitted at once (queued or running); more get 503 + Retry-After
    max_queued_chars: int = 131_072  # text characters waiting for the model (2 full batches of 64 x 1000)
    max_queued_images: int = 16  # decoded images waiting for the model
    batch_window_ms: float = 3.0  # how long the model worker waits for more queries to share a forward
    max_forward_items: int = 128  # texts (or images) per forward
    max_forward_chars: int = 8192  # text characters per forward: bounds the time of one forward
    decode_workers: int = 2  # uploads decoded at once (each may be 40 M pixels)
    thumb_cache: int = 512  # thumbnails kept in memory

    def __post_init__(self) -> None:
        if not self.no_auth and not self.api_key:
            raise ValueError("the service needs an API key (or no_auth=True)")
        for name in ("max_request_bytes", "max_batch", "max_text_chars", "max_k", "max_inflight",
                     "max_queued_chars", "max_forward_items", "max_forward_chars", "decode_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServiceConfig.{name} must be at least 1; got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise ValueError(f"ServiceConfig.timeout_s must be positive; got {self.timeout_s}")


class BadInput(Exception):
    """A request the service refuses: `status` (4xx, or 503 when overloaded) and a message saying why."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after
