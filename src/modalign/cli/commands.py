"""The command table: name -> (module, one-line summary). A command's module is imported only when it runs
(or shows its own --help), so `modalign --help` and `--version` load no torch and no encoder library."""

from __future__ import annotations

COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("modalign.cli.cmd_quickstart", 'align EfficientNet-Lite0 and MiniLM on Tux Paint and report (runs offline)'),
    "encoders": ("modalign.cli.cmd_encoders", "list available encoders, or show one encoder's layers"),
    "datasets": ("modalign.cli.cmd_datasets", "list the built-in data sets: size, licence, installed or how to install"),
    "encode": ("modalign.cli.cmd_encode", 'encode a data set into the embedding store (cached, resumable)'),
    "train": ("modalign.cli.cmd_train", 'train projectors that align an image and a text encoder on image-caption pairs'),
    "methods": ("modalign.cli.cmd_methods", "list the alignment methods (the default, auto, first)"),
    "eval": ("modalign.cli.cmd_eval", 'evaluate a saved model: retrieval, zero-shot, or the whole benchmark suite'),
    "select": ("modalign.cli.cmd_select", 'rank image/text encoders and layers by how similar their representations are'),
    "curate": ("modalign.cli.cmd_curate", 'pick a concept-balanced, de-duplicated subset of image-caption pairs'),
    "adapt": ("modalign.cli.cmd_adapt", 'few-shot adaptation: linear probe, cache and prototype heads vs zero-shot'),
    "diagnose": ("modalign.cli.cmd_diagnose", "diagnose a saved model's embedding space (gap, alignment, uniformity, confusion)"),
    "store": ("modalign.cli.cmd_store", "list, inspect or delete the embedding store's entries"),
    "extend": ("modalign.cli.cmd_extend", 'add a modality (e.g. audio) to an aligned model, leaving its towers untouched'),
    "index": ("modalign.cli.cmd_index", 'build and maintain a search index (FAISS + SQLite metadata)'),
    "search": ("modalign.cli.cmd_search", 'query a search index with text or an image'),
    "serve": ("modalign.cli.cmd_serve", 'serve an index over HTTP (JSON API + a web page at /)'),
}


def summary(name: str) -> str:
    return COMMANDS[name][1]
