"""modalign: align frozen unimodal encoders into one CLIP-like embedding space."""

__version__ = "0.1.0"
