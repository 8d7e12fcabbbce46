"""What align/ needs of a model, as Protocols: align sees embeddings only and never imports the model.

modalign.model.AlignedModel satisfies both; closed-form fits (align.closed_form.ClosedFormFit) satisfy
`Projects`, so the same metrics score a trained model and a closed-form map.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn


class Projects(Protocol):
    """Maps (n, d_modality) features of a modality to (n, embed_dim) unit vectors."""

    def project(self, modality: str, features: torch.Tensor, /) -> torch.Tensor: ...


class TrainableTowers(Projects, Protocol):
    """A module holding one projector per modality and a learnable temperature (log of 1/T)."""

    projectors: nn.ModuleDict
    logit_scale: nn.Parameter

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def cpu(self) -> Any: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any: ...
