"""Spectrogram helpers the audio encoders share: a Slaney mel filterbank and log-mel spectrograms in torch.

The filterbank matches librosa.filters.mel(htk=False, norm="slaney") (and transformers'
mel_filter_bank(norm="slaney", mel_scale="slaney")), which is what Whisper was trained with, so
`whisper_log_mel` reproduces Whisper's input features without librosa or torchaudio.
"""

from __future__ import annotations

import numpy as np
import torch

_F_SP = 200.0 / 3  # Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = hz >= _MIN_LOG_HZ
    mel[log_part] = _MIN_LOG_MEL + np.log(hz[log_part] / _MIN_LOG_HZ) / _LOGSTEP
    return mel


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * _F_SP
    log_part = mel >= _MIN_LOG_MEL
    hz[log_part] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel[log_part] - _MIN_LOG_MEL))
    return hz


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float32 triangular filters on the Slaney mel scale, area-normalised."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)  # (F,)
    mel_pts = mel_to_hz(np.linspace(hz_to_mel(np.array([fmin]))[0], hz_to_mel(np.array([fmax]))[0], n_mels + 2))
    fdiff = np.diff(mel_pts)  # (n_mels + 1,)
    ramps = mel_pts[:, None] - fft_freqs[None, :]  # (n_mels + 2, F)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))  # (n_mels, F)
    weights *= (2.0 / (mel_pts[2:] - mel_pts[:-2]))[:, None]  # Slaney norm: constant energy per band
    return weights.astype(np.float32)


def power_spectrogram(wave: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """(n,) waveform -> (n_fft // 2 + 1, frames) power, Hann window, centred with reflect padding."""
    if wave.shape[-1] <= n_fft // 2:  # reflect padding needs more samples than half a window
        wave = torch.nn.functional.pad(wave, (0, n_fft // 2 + 1 - wave.shape[-1]))
    window = torch.hann_window(n_fft, device=wave.device)
    stft = torch.stft(wave, n_fft, hop, window=window, center=True, pad_mode="reflect", return_complex=True)
    return stft.abs() ** 2  # (F, frames)


def whisper_log_mel(wave: np.ndarray, n_mels: int = 80, n_samples: int = 480_000) -> np.ndarray:
    """Whisper's input: (n,) 16 kHz waveform, zero-padded / cropped to 30 s -> (n_mels, 3000) float32.

    log10 of the mel power (n_fft 400, hop 160), floored 8 below its maximum, scaled by (x + 4) / 4.
    """
    x = np.zeros(n_samples, dtype=np.float32)
    x[: min(len(wave), n_samples)] = wave[:n_samples]
    power = power_spectrogram(torch.from_numpy(x), 400, 160)[:, :-1]  # (201, 3000): the last frame is dropped
    mel = torch.from_numpy(mel_filterbank(16_000, 400, n_mels)) @ power  # (n_mels, 3000)
    log_spec = mel.clamp(min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).numpy().astype(np.float32)
