"""Bridges to other tools: the model hub, an open_clip-like interface, CLIP_benchmark, TensorBoard."""
