"""Frozen unimodal encoders behind one registry."""

from modalign.encoders.base import FINAL_LAYER, Encoder, EncoderInfo, LayerInfo
from modalign.encoders.registry import create_encoder, list_encoders, register_backend, register_encoder

__all__ = [
    "FINAL_LAYER", "Encoder", "EncoderInfo", "LayerInfo",
    "create_encoder", "list_encoders", "register_backend", "register_encoder",
]
