"""`logmel`: a learning-free audio baseline, pooled log-mel statistics (no weights, nothing to download).

    create_encoder("logmel")                       # 64 mel bands, 16 kHz, first 10 s of each clip
    create_encoder("logmel?n_mels=40&max_seconds=5")

Each clip is decoded to 16 kHz mono, turned into a log-mel spectrogram (25 ms Hann windows every 10 ms,
Slaney mel bands from `fmin` to 8 kHz, log(power + 1e-6)), and pooled over time into one vector:
  mean    the mean of each band over time                       (n_mels,)
  stats   mean and standard deviation of each band               (2 n_mels,)
  final   stats of the bands and of their first differences over time (deltas)   (4 n_mels,)
Any audio encoder is worth comparing against it: it knows the spectrum's shape and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from modalign.data.audio import load_audio
from modalign.encoders.audio_features import mel_filterbank, power_spectrogram
from modalign.encoders.base import FINAL_LAYER, Encoder, LayerInfo
from modalign.encoders.common import opt_float, opt_int
from modalign.encoders.registry import register_encoder
from modalign.errors import ConfigError
from modalign.utils.hashing import hash_json

SAMPLE_RATE = 16_000
N_FFT, HOP = 400, 160  # 25 ms windows, 10 ms hop at 16 kHz


class LogMelEncoder(Encoder):
    """Learning-free log-mel statistics (mean, std, deltas) of 16 kHz audio; a baseline for audio encoders."""

    modality = "audio"

    def __init__(self, n_mels: int | str = 64, max_seconds: float | str = 10.0, fmin: float | str = 50.0):
        self.spec = "logmel"
        self.n_mels = opt_int(n_mels, "n_mels") or 64
        self.max_seconds = opt_float(max_seconds, "max_seconds") or 10.0
        self.fmin = opt_float(fmin, "fmin") or 0.0
        if self.n_mels < 2 or self.max_seconds <= 0 or not 0 <= self.fmin < SAMPLE_RATE / 2:
            raise ConfigError(f"logmel needs n_mels >= 2, max_seconds > 0 and 0 <= fmin < 8000; got "
                              f"n_mels={self.n_mels}, max_seconds={self.max_seconds}, fmin={self.fmin}")
        self.filters = torch.from_numpy(mel_filterbank(SAMPLE_RATE, N_FFT, self.n_mels, self.fmin))  # (n_mels, F)

    def layers(self) -> list[LayerInfo]:
        m = self.n_mels
        return [LayerInfo("mean", m, "mean"), LayerInfo("stats", 2 * m, "mean+std"),
                LayerInfo(FINAL_LAYER, 4 * m, "mean+std, with deltas")]

    def preprocessing(self) -> dict[str, Any]:
        return {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop": HOP, "n_mels": self.n_mels, "fmin": self.fmin,
                "fmax": SAMPLE_RATE / 2, "max_seconds": self.max_seconds, "log": "ln(power + 1e-6)", "mono": True}

    def fingerprint(self) -> str:
        return hash_json({"logmel": self.preprocessing()})  # no weights: the recipe is the model

    def load(self, item: Any) -> np.ndarray:
        return load_audio(item, SAMPLE_RATE, self.max_seconds)  # (n,) float32

    def collate(self, loaded: Sequence[np.ndarray]) -> list[torch.Tensor]:
        return [torch.from_numpy(np.ascontiguousarray(w)) for w in loaded]  # clips of any length

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """(n,) waveform -> (n_mels, frames) log-mel spectrogram."""
        power = power_spectrogram(wave.to(self.device), N_FFT, HOP)  # (F, frames)
        return (self.filters.to(self.device) @ power + 1e-6).log()

    @torch.no_grad()
    def forward(self, batch: list[torch.Tensor], layers: Sequence[str]) -> dict[str, torch.Tensor]:
        for name in layers:
            self.layer_info(name)  # raises with the valid names
        rows = []
        for wave in batch:
            spec = self.log_mel(wave)  # (n_mels, T)
            delta = spec[:, 1:] - spec[:, :-1] if spec.shape[1] > 1 else torch.zeros_like(spec)  # (n_mels, T-1)
            rows.append(torch.cat([spec.mean(1), spec.std(1, correction=0),
                                   delta.mean(1), delta.std(1, correction=0)]))  # (4 n_mels,)
        full = torch.stack(rows).float().cpu()  # (B, 4 n_mels)
        widths = {"mean": self.n_mels, "stats": 2 * self.n_mels, FINAL_LAYER: 4 * self.n_mels}
        return {name: full[:, : widths[name]].contiguous() for name in layers}


register_encoder("logmel", LogMelEncoder, modality="audio",
                 description="learning-free log-mel statistics of 16 kHz audio (a baseline): layers mean, stats, final",
                 requires="modalign[audio] (soundfile, scipy)")
