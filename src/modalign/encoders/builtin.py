"""Imports every built-in backend module; each registers itself. Heavy libraries load lazily inside them."""

from modalign.encoders import efficientnet_lite  # noqa: F401
