"""Hugging Face audio encoders: `hf-audio:ID_OR_PATH` (wav2vec2, HuBERT, WavLM, Whisper's encoder, CLAP).

    create_encoder("hf-audio:facebook/wav2vec2-base")          # needs the hub (or a local folder)
    create_encoder("hf-audio:openai/whisper-base")             # the encoder half of Whisper
    create_encoder("hf-audio:laion/clap-htsat-unfused")        # CLAP's audio embedding
    create_encoder("hf-audio:/models/my-wav2vec2?max_seconds=10")

The model's AutoFeatureExtractor prepares the input (its sampling rate decides the resampling).
Layers: `hidden.0` (the input to the first transformer layer) ... `hidden.N` and `final` (the last
hidden state), each mean-pooled over the frames of the real audio, padding left out (wav2vec2-style
models: the conv feature extractor's output lengths; Whisper: 20 ms per frame of its 30 s window).
CLAP has one layer, `final`: ClapModel.get_audio_features, its projected audio embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from modalign.data.audio import load_audio
from modalign.encoders.base import FINAL_LAYER, Encoder, LayerInfo
from modalign.encoders.common import hf_source, model_folder_fingerprint, opt_float
from modalign.encoders.registry import register_backend
from modalign.errors import ConfigError
from modalign.utils.hashing import hash_state_dict

WHISPER_SAMPLES_PER_FRAME = 320  # hop 160, then a stride-2 convolution


class HFAudioEncoder(Encoder):
    """Hugging Face audio model (wav2vec2, HuBERT, Whisper encoder, CLAP), mean-pooled hidden states."""

    modality = "audio"

    def __init__(self, id_or_path: str, max_seconds: float | str | None = 30.0):
        try:
            from transformers import AutoConfig, AutoFeatureExtractor, AutoModel
        except ImportError as e:
            raise ImportError("pip install 'modalign[hf]' (transformers)") from e
        self.local_dir, source = hf_source(id_or_path)
        self.spec = f"hf-audio:{id_or_path}"
        self.max_seconds = opt_float(max_seconds, "max_seconds") or 30.0
        try:
            config = AutoConfig.from_pretrained(source)
            self.kind = {"clap": "clap", "whisper": "whisper"}.get(config.model_type, "ctc")
            if self.kind == "clap":
                from transformers import ClapModel

                self.model = ClapModel.from_pretrained(source).eval()
            else:
                model = AutoModel.from_pretrained(source).eval()
                self.model = model.get_encoder() if self.kind == "whisper" else model
            self.extractor = AutoFeatureExtractor.from_pretrained(source)
        except OSError as e:
            raise ConfigError(
                f"could not load Hugging Face audio model {id_or_path!r}: {e}. Offline, pass a local folder "
                "(hf-audio:/path)"
            ) from e
        self.model.requires_grad_(False)
        self.sample_rate = int(self.extractor.sampling_rate)
        # wav2vec2-style models that mask padding are padded to each batch's longest clip: sort by length.
        # (Whisper pads to 30 s and CLAP to its window whatever the batch; models without an attention
        # mask give padding-dependent vectors, so their batches keep row order.)
        self.length_bucketing = self.kind == "ctc" and bool(getattr(self.extractor, "return_attention_mask", False))
        self._layers: list[LayerInfo] | None = None
        self._fingerprint: str | None = None

    # ---- description -------------------------------------------------------------------------
    def layers(self) -> list[LayerInfo]:
        if self._layers is None:  # one probe pass reads every layer's width
            pooled = self._pooled(self.collate([np.zeros(self.sample_rate, np.float32)]))
            self._layers = [LayerInfo(name, v.shape[-1], "mean") for name, v in pooled.items()]
        return self._layers

    def preprocessing(self) -> dict[str, Any]:
        return {"extractor": type(self.extractor).__name__, **self.extractor.to_dict(),
                "max_seconds": self.max_seconds, "pooling": "mean", "mono": True}

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = (model_folder_fingerprint(self.local_dir) if self.local_dir is not None
                                 else hash_state_dict(self.model.state_dict()))
        return self._fingerprint

    def _move(self, device: torch.device) -> None:
        self.model.to(device)

    # ---- the pipeline ------------------------------------------------------------------------
    def load(self, item: Any) -> np.ndarray:
        return load_audio(item, self.sample_rate, self.max_seconds)  # (n,) float32

    def input_length(self, loaded: np.ndarray) -> int:
        return len(loaded)  # samples

    def collate(self, loaded: Sequence[np.ndarray]) -> dict[str, Any]:
        waves = [np.asarray(w, dtype=np.float32) for w in loaded]
        if self.kind == "ctc":
            batch = self.extractor(waves, sampling_rate=self.sample_rate, padding=True, return_tensors="pt",
                                   return_attention_mask=True)
        else:
            batch = self.extractor(waves, sampling_rate=self.sample_rate, return_tensors="pt")
        out = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        out["lengths"] = torch.as_tensor([len(w) for w in waves], dtype=torch.long)  # (B,) samples
        return out

    def _frame_mask(self, lengths: torch.Tensor, n_frames: int) -> torch.Tensor:
        """(B, n_frames) 1 for frames of real audio, 0 for padding."""
        if self.kind == "whisper":
            n = torch.clamp(torch.ceil(lengths.float() / WHISPER_SAMPLES_PER_FRAME), 1, n_frames).long()
        else:
            n = self.model._get_feat_extract_output_lengths(lengths).long().clamp(1, n_frames)
        return (torch.arange(n_frames, device=lengths.device)[None, :] < n[:, None]).float()

    def _pooled(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        lengths = batch.pop("lengths")
        with torch.no_grad():
            if self.kind == "clap":
                emb = self.model.get_audio_features(**batch)
                emb = emb if isinstance(emb, torch.Tensor) else emb.pooler_output  # newer transformers: an output
                return {FINAL_LAYER: emb.float()}
            if self.kind == "whisper":
                out = self.model(input_features=batch["input_features"], output_hidden_states=True, return_dict=True)
            else:
                out = self.model(**batch, output_hidden_states=True, return_dict=True)
        states = [*out.hidden_states, out.last_hidden_state]  # each (B, T, D)
        mask = self._frame_mask(lengths, states[-1].shape[1])[..., None]  # (B, T, 1)
        names = [f"hidden.{i}" for i in range(len(states) - 1)] + [FINAL_LAYER]
        return {name: ((h * mask).sum(1) / mask.sum(1)).float() for name, h in zip(names, states, strict=True)}

    @torch.no_grad()
    def forward(self, batch: dict[str, Any], layers: Sequence[str]) -> dict[str, torch.Tensor]:
        for name in layers:
            self.layer_info(name)  # raises with the valid names
        pooled = self._pooled(batch)
        return {name: pooled[name].cpu() for name in layers}


register_backend("hf-audio", HFAudioEncoder, modality="audio",
                 description="Hugging Face audio model (wav2vec2, HuBERT, Whisper encoder, CLAP): hf-audio:ID_OR_PATH",
                 requires="modalign[hf,audio] (transformers, soundfile, scipy)")
