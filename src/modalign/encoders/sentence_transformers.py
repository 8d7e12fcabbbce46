"""Sentence-transformers text encoders: `st:ID_OR_PATH?max_tokens=N`.

A hub id (`st:sentence-transformers/all-MiniLM-L6-v2`) downloads for users online; a local folder
(`st:/models/minilm`) loads offline.

Layers (transformer models): `embeddings` (token-embedding output), `hidden.1` ... `hidden.N` (each
transformer layer), all mean-pooled over real tokens with the attention mask, and `final`: exactly what
`SentenceTransformer.encode` returns (the model's own pooling, dense and Normalize modules). Models whose
first module is not a Hugging Face transformer (static embeddings ...) expose `final` only.

On the CPU the forward runs as an exported ONNX graph under ONNX Runtime when it exports and agrees with
eager torch (encoders.fast_path; `encoder.runtime` / $MODALIGN_RUNTIME choose), else eager torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from modalign.data.images import load_text
from modalign.encoders.base import FINAL_LAYER, Encoder, LayerInfo
from modalign.encoders.common import (
    describe_tokenizer,
    is_local_path,
    masked_mean,
    model_folder_fingerprint,
    opt_int,
)
from modalign.encoders.fast_path import FastForward
from modalign.encoders.registry import register_backend
from modalign.errors import ConfigError
from modalign.utils.hashing import hash_state_dict

logger = logging.getLogger(__name__)

EMBEDDINGS_LAYER = "embeddings"
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what the exported graph takes
PROBE_TEXTS = ["a probe sentence", "x", "a longer probe sentence, with punctuation and several more words in it"]


class SentenceTransformerEncoder(FastForward, Encoder):
    """Sentence-transformers text encoder: the model's sentence embedding or any transformer layer."""

    modality = "text"
    length_bucketing = True  # batches padded to their longest caption: sort by length, as st.encode does

    def __init__(self, id_or_path: str, max_tokens: int | str | None = None):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ImportError("pip install 'modalign[st]' (sentence-transformers)") from e
        self.local_dir: Path | None = None
        if is_local_path(id_or_path):
            self.local_dir = Path(id_or_path).expanduser()
            if not self.local_dir.is_dir():
                raise ConfigError(f"sentence-transformers model folder not found: {self.local_dir}")
        self.source = id_or_path
        self.spec = f"st:{id_or_path}"
        try:
            self.st = SentenceTransformer(str(self.local_dir or id_or_path), device="cpu")
        except OSError as e:
            raise ConfigError(
                f"could not load sentence-transformers model {id_or_path!r}: {e}. Offline, pass a local "
                f"model folder (st:/path/to/model) or use a packaged encoder such as minilm-l6"
            ) from e
        self.st.eval().requires_grad_(False)
        limit = opt_int(max_tokens, "max_tokens")
        if limit is not None:
            if limit < 2:
                raise ConfigError(f"option max_tokens={limit} is too small (at least 2: [CLS] and [SEP])")
            self.st.max_seq_length = limit
        # the transformer inside the first module; None for models that are not HF transformers
        self._auto = getattr(self.st[0], "auto_model", None)
        if self._auto is not None and hasattr(self._auto, "config"):
            # the ST Transformer module then adds "all_layer_embeddings" to its output: one pass, every layer
            self._auto.config.output_hidden_states = True
        else:
            self._auto = None
        prompt_name = getattr(self.st, "default_prompt_name", None)
        self.prompt: str | None = getattr(self.st, "prompts", {}).get(prompt_name) if prompt_name else None
        self._layers: list[LayerInfo] | None = None
        self._preprocessing: dict[str, Any] | None = None
        self._fingerprint: str | None = None

    # ---- description -------------------------------------------------------------------------
    def layers(self) -> list[LayerInfo]:
        if self._layers is None:
            self._layers = self._probe_layers()
        return self._layers

    def _probe_layers(self) -> list[LayerInfo]:
        """Runs one short sentence through the model to read the width of every layer."""
        feats = self._run(self.collate(["a probe sentence"]))
        layers = []
        hidden = feats.get("all_layer_embeddings")
        if hidden is not None:
            layers.append(LayerInfo(EMBEDDINGS_LAYER, hidden[0].shape[-1], "mean"))
            layers += [LayerInfo(f"hidden.{i}", h.shape[-1], "mean") for i, h in enumerate(hidden) if i > 0]
        layers.append(LayerInfo(FINAL_LAYER, feats["sentence_embedding"].shape[-1], "model"))
        return layers

    def preprocessing(self) -> dict[str, Any]:
        if self._preprocessing is None:
            tokenizer = getattr(self.st, "tokenizer", None)
            self._preprocessing = {
                **(describe_tokenizer(tokenizer) if tokenizer is not None else {}),
                "max_seq_length": self.st.max_seq_length,
                "st_lowercase": getattr(self.st[0], "do_lower_case", None),
                "prompt": self.prompt,
                "modules": [type(m).__name__ for m in self.st],
            }
        return self._preprocessing

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            if self.local_dir is not None:
                self._fingerprint = model_folder_fingerprint(self.local_dir)
            else:
                self._fingerprint = hash_state_dict(self.st.state_dict())
        return self._fingerprint

    def _move(self, device: torch.device) -> None:
        self.st.to(device)

    # ---- the pipeline ------------------------------------------------------------------------
    def load(self, item: Any) -> str:
        return load_text(item)

    def input_length(self, loaded: str) -> int:
        return len(loaded)  # characters: sentence-transformers' own sort key, no tokenising needed

    def collate(self, loaded: Sequence[str]) -> dict[str, Any]:
        texts = list(loaded)
        if hasattr(self.st, "preprocess"):  # sentence-transformers >= 5
            return self.st.preprocess(texts, prompt=self.prompt) if self.prompt else self.st.preprocess(texts)
        if self.prompt:
            texts = [self.prompt + t for t in texts]
        return self.st.tokenize(texts)

    def _run(self, batch: dict[str, Any]) -> dict[str, Any]:
        feats = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.no_grad():
            return self.st(feats)  # all modules, as st.encode runs them

    @torch.no_grad()
    def forward(self, batch: dict[str, Any], layers: Sequence[str]) -> dict[str, torch.Tensor]:
        wanted = list(dict.fromkeys(layers))
        for name in wanted:
            self.layer_info(name)  # raises with the valid names
        tokens = {k: v for k, v in batch.items() if k in TOKEN_INPUTS}
        others = {k: v for k, v in batch.items() if k not in TOKEN_INPUTS}
        if self._auto is not None and others in ({}, {"modality": "text"}):  # nothing else (a prompt length ...)
            return self._fast_or_eager(tokens, wanted, 0, probe=self._probe_tokens)
        return self._pooled(batch, wanted)

    def _torch_model(self) -> torch.nn.Module:
        return self.st

    def _probe_tokens(self) -> dict[str, torch.Tensor]:
        """Tokens of sentences of different lengths (padding included), to export with and check against."""
        batch = self.collate(PROBE_TEXTS)
        return {k: v for k, v in batch.items() if k in TOKEN_INPUTS}

    def _pooled(self, batch: dict[str, Any], wanted: list[str]) -> dict[str, torch.Tensor]:
        """Eager torch: the tokenizer's tensors (B, T) -> {layer: (B, D)}; the graph the fast path exports."""
        feats = self._run(batch)
        out: dict[str, torch.Tensor] = {}
        hidden = feats.get("all_layer_embeddings") or ()  # tuple of N + 1 (B, T, D)
        for name in wanted:
            if name == FINAL_LAYER:
                out[name] = feats["sentence_embedding"]  # (B, D_final)
                continue
            index = 0 if name == EMBEDDINGS_LAYER else int(name.split(".")[1])
            out[name] = masked_mean(hidden[index], feats["attention_mask"])  # (B, D)
        return {k: v.float() for k, v in out.items()}


def _st_backend(target: str, max_tokens: str | None = None) -> Encoder:
    return SentenceTransformerEncoder(target, max_tokens=max_tokens)


register_backend("st", _st_backend, modality="text",
                 description="sentence-transformers model, hub id or local folder: st:ID_OR_PATH?max_tokens=N",
                 requires="modalign[st] (sentence-transformers)")
