"""Imports every built-in backend module; each registers itself. Heavy libraries load lazily inside them."""

from modalign.encoders import (  # noqa: F401  # noqa: F401
    audio_hf,
    audio_logmel,
    audio_whisper,
    efficientnet_lite,
    hf,
    onnx_backend,
    packaged_text,
    sentence_transformers,
    timm_backend,
)
