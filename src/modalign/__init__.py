"""modalign: align frozen unimodal encoders into one CLIP-like embedding space.

The main names are importable from the top level; they load on first use so that `import modalign`
stays cheap (no torch, no encoder libraries, no plotting until needed).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "AlignedModel": "modalign.model",
    "TowerConfig": "modalign.model",
    "EmbeddingStore": "modalign.store",
    "FitConfig": "modalign.workflows.fit",
    "fit": "modalign.workflows.fit",
    "TrainConfig": "modalign.align.trainer",
    "ProjectorConfig": "modalign.align.projectors",
    "create_encoder": "modalign.encoders.registry",
    "list_encoders": "modalign.encoders.registry",
    "register_encoder": "modalign.encoders.registry",
    "load_dataset": "modalign.data.registry",
    "list_datasets": "modalign.data.registry",
    "retrieval_metrics": "modalign.evaluate.retrieval",
    "zeroshot_metrics": "modalign.evaluate.zeroshot",
    "evaluate_retrieval": "modalign.workflows.evaluate",
    "evaluate_zeroshot": "modalign.workflows.evaluate",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'modalign' has no attribute {name!r}")
