"""Upgrades without re-indexing: map a new image encoder into an OLD aligned space (XBT-style).

An index built with an old model stays valid when the image encoder is upgraded: a small projector is
trained from the NEW encoder's features to the OLD model's image embeddings of the same training images
(symmetric InfoNCE against the old embeddings, plus an L2 pull), after "Learning Backward Compatible
Embeddings" (XBT, Hu et al., KDD 2022). The result is an ordinary AlignedModel bundle whose image tower
is new encoder + compat projector and whose text tower is the old one, so old index entries, new
entries and queries all live in one space. Its config records the old model's space hash
(metadata.compatible_with), which `SearchIndex.check_model` accepts.

    bundle = train_compat(old_model, "effnet-lite2", dataset, store, train_groups, CompatConfig())
    bundle.save_pretrained("runs/tux-lite2-compat")
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from modalign.align.projectors import ProjectorConfig, fit_input_statistics
from modalign.data.column import AlignedDataset, Column
from modalign.encoders.base import Encoder
from modalign.model import AlignedModel, TowerConfig
from modalign.store import EmbeddingStore
from modalign.utils.layer_spec import LayerSpec
from modalign.utils.paths import user_path

logger = logging.getLogger(__name__)


@dataclass
class CompatConfig:
    projector: ProjectorConfig = field(default_factory=lambda: ProjectorConfig(
        type="mlp", hidden_dim=1024, dropout=0.1, input_dropout=0.1))  # out_dim is set to the old space's
    layer: str = "final"  # new encoder layer the projector reads
    epochs: int = 300  # full-batch steps over the training images
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.05  # InfoNCE temperature against the old embeddings
    l2_weight: float = 1.0  # weight of ||new - old||^2 next to InfoNCE
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "projector": self.projector.to_dict()}


def stored_features(store: EmbeddingStore, column: Column, encoder: Encoder, layer: LayerSpec, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) frozen features of the rows the encoder could read, and those rows."""
    from modalign.features.pipeline import encode_column, valid_rows

    entry = encode_column(store, column, encoder, layer, progress=False)
    rows = valid_rows(entry, rows)
    return np.ascontiguousarray(entry.vectors(rows), dtype=np.float32), rows


def compat_loss(pred: torch.Tensor, target: torch.Tensor, cfg: CompatConfig) -> torch.Tensor:
    """Symmetric InfoNCE between (B, d) mapped and (B, d) old embeddings + l2_weight * mean squared error."""
    p, t = F.normalize(pred, dim=-1), F.normalize(target, dim=-1)
    logits = p @ t.t() / cfg.temperature  # (B, B)
    labels = torch.arange(len(p))
    nce = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    return nce + cfg.l2_weight * (p - t).pow(2).sum(-1).mean()


def train_compat(old: AlignedModel, old_dir: str | Path, new_encoder: Any, dataset: AlignedDataset, store: EmbeddingStore,
                 train_groups: np.ndarray, cfg: CompatConfig | None = None) -> AlignedModel:
    """A bundle: image tower = `new_encoder` + a projector into `old`'s space; text tower = old's."""
    from modalign.align.layer_mix import create_tower_module
    from modalign.search.index import space_hash

    cfg = cfg or CompatConfig()
    torch.manual_seed(cfg.seed)
    column = dataset.column("image")
    rows = dataset.rows_of_groups("image", train_groups)
    old_tower = old.towers["image"]
    old_feats, rows_old = stored_features(store, column, old.encoder("image"), old_tower.layer, rows)
    new_feats, rows_new = stored_features(store, column, new_encoder, cfg.layer, rows)
    common = np.intersect1d(rows_old, rows_new)
    old_feats = old_feats[np.searchsorted(rows_old, common)]
    new_feats = new_feats[np.searchsorted(rows_new, common)]
    with torch.no_grad():
        target = old.project("image", old_feats)  # (n, embed_dim) the old space
    pcfg = ProjectorConfig.from_dict({**cfg.projector.to_dict(), "out_dim": old.embed_dim})
    x = torch.from_numpy(new_feats)  # (n, new_dim)
    module = create_tower_module(cfg.layer, x.shape[1], "concat", pcfg)
    fit_input_statistics(module, x)
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    module.train()
    for epoch in range(cfg.epochs):
        opt.zero_grad()
        loss = compat_loss(module(x), target, cfg)
        loss.backward()
        opt.step()
        if epoch % 100 == 0 or epoch == cfg.epochs - 1:
            logger.info("compat epoch %d: loss %.4f", epoch, loss.item())
    module.eval()

    towers = {m: t for m, t in old.towers.items() if m != "image"}
    towers["image"] = TowerConfig("image", new_encoder.spec, cfg.layer, int(x.shape[1]), new_encoder.fingerprint(),
                                  pcfg)
    meta = {"method": "compat", "compatible_with": {"model": str(user_path(old_dir).resolve()),
                                                    "space": space_hash(old_dir)},
            "compat_config": cfg.to_dict(), "n_train_images": int(len(x))}
    bundle = AlignedModel(towers, logit_scale=old.logit_scale.item(), metadata=meta)
    for m in towers:
        src = module if m == "image" else old.projectors[m]
        bundle.projectors[m].load_state_dict(src.state_dict())
    bundle.set_encoder("image", new_encoder)
    if "text" in towers:
        bundle.set_encoder("text", old.encoder("text"))
    return bundle
