"""Projectors, losses and training: everything here works on embeddings only, never on an encoder."""

from modalign.align.losses import clip_loss
from modalign.align.projectors import ProjectorConfig, create_projector, list_projectors, register_projector

__all__ = ["ProjectorConfig", "clip_loss", "create_projector", "list_projectors", "register_projector"]
