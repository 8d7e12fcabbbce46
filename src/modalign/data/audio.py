"""Safe audio decoding: a file (or an array) in, a mono float32 waveform at a fixed rate out.

    wave = load_audio("dog.ogg", sample_rate=16_000)      # (n_samples,) float32 in [-1, 1]

Every failure (missing file, undecodable bytes, no samples, NaNs, digital silence) becomes an
InvalidItem with a reason, never a crash, so the store skips the item and counts it. Decoding uses
`soundfile` (PyPI; its wheels bundle libsndfile with Ogg/Vorbis, FLAC, WAV and, from libsndfile 1.1,
MP3); resampling uses scipy's polyphase filter. Both are imported lazily: `pip install 'modalign[audio]'`.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from modalign.errors import InvalidItem

AUDIO_EXTRA = "pip install 'modalign[audio]' (soundfile, scipy)"


def _soundfile() -> Any:
    try:
        import soundfile
    except (ImportError, OSError) as e:  # OSError: a soundfile without its libsndfile
        raise ImportError(f"audio decoding needs soundfile: {AUDIO_EXTRA}") from e
    return soundfile


def resample(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """(n,) float32 at rate_in -> (m,) float32 at rate_out, polyphase (scipy.signal.resample_poly)."""
    if rate_in == rate_out:
        return wave.astype(np.float32, copy=False)
    try:
        from scipy.signal import resample_poly
    except ImportError as e:
        raise ImportError(f"audio resampling needs scipy: {AUDIO_EXTRA}") from e
    ratio = Fraction(rate_out, rate_in)
    return resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)


def load_audio(item: Any, sample_rate: int = 16_000, max_seconds: float | None = None) -> np.ndarray:
    """Path / str of an audio file, a (wave, rate) tuple, or a 1-d array already at `sample_rate`
    -> (n,) float32 mono waveform at `sample_rate`, cropped to the first `max_seconds` when given.
    Stereo and multi-channel audio is averaged to mono."""
    if isinstance(item, tuple) and len(item) == 2:
        wave, rate = np.asarray(item[0]), int(item[1])
    elif isinstance(item, np.ndarray):
        wave, rate = item, sample_rate
    elif isinstance(item, str | Path):
        path = Path(item)
        if not path.is_file():
            raise InvalidItem(f"missing file: {path}")
        sf = _soundfile()
        try:
            wave, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (n, channels)
        except (RuntimeError, sf.LibsndfileError, ValueError, OSError) as e:
            raise InvalidItem(f"undecodable audio {path.name}: {type(e).__name__}: {e}") from e
    else:
        raise InvalidItem(f"not audio: {type(item).__name__}")
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 2:
        wave = wave.mean(axis=1)  # (n,) mono
    if wave.ndim != 1:
        raise InvalidItem(f"audio array has shape {wave.shape}; expected (n,) or (n, channels)")
    if rate <= 0:
        raise InvalidItem(f"bad sample rate {rate}")
    if wave.size == 0:
        raise InvalidItem("empty audio (0 samples)")
    if not np.isfinite(wave).all():
        raise InvalidItem("audio holds NaN or infinite samples")
    if not wave.any():  # digital silence: every silent clip would get one and the same vector
        raise InvalidItem("silent audio (every sample is 0)")
    if max_seconds is not None:
        wave = wave[: int(round(max_seconds * rate))]
    return resample(wave, rate, sample_rate)
