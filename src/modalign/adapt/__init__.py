"""Few-shot adaptation on aligned embeddings: heads fitted on a few labelled items per class.

Works on embedding tensors only (like align/): the model, encoders and store stay outside. Fit a head
with `fit_head("probe" | "cache" | "prototype" | "zeroshot", FewShotData(...))`; save and reload it with
`save_head` / `load_head`. modalign.workflows.adapt wires it to a model and labelled images.
"""

from modalign.adapt.heads import (
    HEADS,
    FewShotData,
    FewShotHead,
    fit_head,
    load_head,
    refit_head,
    register_head,
    save_head,
)

__all__ = ["HEADS", "FewShotData", "FewShotHead", "fit_head", "load_head", "refit_head", "register_head", "save_head"]
