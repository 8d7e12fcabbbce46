"""Faster encoding that must not change the vectors: length-sorted text batches, the ONNX Runtime fast
path of image encoders (exported once, checked, cached), decoding in worker processes."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import caption_of
from modalign.data.column import Column
from modalign.encoders import create_encoder
from modalign.errors import ConfigError, InvalidItem
from modalign.store import EmbeddingStore, encode_plan


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def minilm():
    return create_encoder("minilm-l6")


@pytest.fixture(scope="module")
def timm_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    """timm's tiny test_resnet (random weights, seed 1) from a local file: a real model that exports fast."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=0).eval()
    path = tmp_path_factory.mktemp("timm") / "test_resnet.safetensors"
    save_file(model.state_dict(), str(path))
    return f"timm:test_resnet?weights={path}"


@pytest.fixture()
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cache"
    monkeypatch.setenv("MODALIGN_CACHE", str(home))
    monkeypatch.delenv("MODALIGN_RUNTIME", raising=False)
    return home


def _close(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> None:
    """float32 agreement of two execution paths: 1e-5 relative to the vectors' scale."""
    a, b = np.asarray(a), np.asarray(b)
    scale = float(np.abs(b).max())
    assert scale > 1e-3  # a real signal
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * scale)


# ---- length-sorted batches --------------------------------------------------------------------
def test_length_sorted_batches_give_the_row_order_vectors(tmp_path, tux_images, minilm, monkeypatch):
    caps = [caption_of(p) for p in tux_images]
    texts = [" ".join(caps[: 1 + (i * 5) % 12]) for i in range(20)]  # 1 to 12 captions: lengths vary ~10x
    column = Column("text", [f"t{i}" for i in range(20)], texts, np.arange(20))
    seen: list[list[int]] = []
    minilm.layers()  # the one-off probe pass, before counting batches
    minilm.forward(minilm.collate(["warm-up"]), ["final"])  # the fast path's export and check tokenise probes
    original = minilm.collate

    def spy(loaded):
        seen.append([len(t) for t in loaded])
        return original(loaded)

    monkeypatch.setattr(minilm, "collate", spy)
    got = EmbeddingStore(tmp_path / "a").encode(column, minilm, batch_size=4, shard_size=10, progress=False)["final"]
    monkeypatch.undo()
    assert len(seen) == 6  # 2 shards of 10 rows -> batches of 4, 4, 2 each
    assert all(lengths == sorted(lengths, reverse=True) for lengths in seen)  # longest first
    assert seen[0][0] == max(len(t) for t in texts[:10])  # sorted within the first shard
    row_order = [[len(t) for t in texts[s + i : s + min(i + 4, 10)]] for s in (0, 10) for i in range(0, 10, 4)]
    assert seen != row_order  # the batches really were re-formed

    monkeypatch.setattr(minilm, "length_bucketing", False)
    plain = EmbeddingStore(tmp_path / "b").encode(column, minilm, batch_size=4, shard_size=10, progress=False)["final"]
    assert got.path.name == plain.path.name  # batching is not part of the cache key
    _close(got.vectors(), plain.vectors())
    unsorted = minilm.encode(texts, batch_size=4)
    monkeypatch.undo()
    _close(minilm.encode(texts, batch_size=4), unsorted)  # Encoder.encode sorts too, rows stay in order
    _close(got.vectors(), minilm.st.encode(texts, batch_size=4))


# ---- the ONNX Runtime fast path ---------------------------------------------------------------
def test_fast_path_matches_eager_and_is_exported_once(cache_home, timm_spec, tux_images, caplog):
    enc = create_encoder(timm_spec)
    batch = enc.collate([enc.load(p) for p in tux_images[:4]])
    layers = [enc.layer_names()[0], "final"]
    with caplog.at_level(logging.INFO, logger="modalign.encoders.fast_path"):
        fast = enc.forward(batch, layers)
    graph = enc._fast.graph_path(layers)
    assert graph.is_file() and graph.parent.parent == cache_home / "graphs"  # <cache>/graphs/<fingerprint>/
    assert graph.parent.name == enc.fingerprint()[:20]
    assert enc._fast._graphs[tuple(layers), False] is not None  # ONNX Runtime ran (float pixels)
    record = json.loads(graph.with_suffix(".json").read_text())
    assert record["ok"] and set(record["outputs"]) == set(layers)
    assert "exported" in caplog.text

    enc.runtime = "eager"
    eager = enc.forward(batch, layers)
    for name in layers:
        _close(fast[name], eager[name])

    caplog.clear()
    mtime = graph.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="modalign.encoders.fast_path"):
        again = create_encoder(timm_spec).forward(batch, layers)  # a new encoder, as in a new process
    assert "exported" not in caplog.text and graph.stat().st_mtime_ns == mtime  # reused, checked again
    np.testing.assert_array_equal(again["final"].numpy(), fast["final"].numpy())


def test_store_key_does_not_depend_on_the_execution_path(cache_home, timm_spec, tux_images, tmp_path):
    column = Column("image", [p.name for p in tux_images[:6]], tux_images[:6], np.arange(6))
    eager_enc, fast_enc = create_encoder(timm_spec), create_encoder(timm_spec)
    eager_enc.runtime = "eager"
    store = EmbeddingStore(tmp_path / "store")
    eager = store.encode(column, eager_enc, batch_size=4, progress=False)["final"]
    reused = store.encode(column, fast_enc, batch_size=4, progress=False)["final"]
    assert reused.path == eager.path and reused.report.shards_written == 0  # same key: reused
    fresh = EmbeddingStore(tmp_path / "other").encode(column, fast_enc, batch_size=4, progress=False)["final"]
    assert fast_enc._fast is not None and fresh.path.name == eager.path.name
    _close(fresh.vectors(), eager.vectors())


def test_normalise_pixels_equals_the_numpy_transform_bit_for_bit():
    from modalign.data.image_transform import IMAGENET_MEAN, IMAGENET_STD, ImageTransform
    from modalign.encoders.image_transforms import normalise_pixels

    every = np.stack([np.arange(256, dtype=np.uint8).reshape(16, 16)] * 3, axis=-1)  # (16, 16, 3): all 256 values
    for mean, std in [(IMAGENET_MEAN, IMAGENET_STD), ((127 / 255,) * 3, (128 / 255,) * 3)]:
        numpy = ImageTransform(size=16, mean=mean, std=std).normalise(every)  # (3, 16, 16)
        torch_ = normalise_pixels(torch.from_numpy(every[None]), mean, std)  # (1, 3, 16, 16)
        assert torch_.dtype == torch.float32
        np.testing.assert_array_equal(torch_[0].numpy(), numpy)


def test_uint8_batches_give_the_float_batches_vectors(cache_home, timm_spec, tux_images, tmp_path):
    enc = create_encoder(timm_spec)
    raw = enc.collate([enc.process_loader()(p) for p in tux_images[:4]])  # what the store's loop feeds
    floats = enc.collate([enc.load(p) for p in tux_images[:4]])
    assert raw.dtype == torch.uint8 and tuple(raw.shape) == (4, 160, 160, 3) and floats.shape == (4, 3, 160, 160)
    layers = [enc.layer_names()[1], "final"]
    fast_raw, fast_float = enc.forward(raw, layers), enc.forward(floats, layers)
    assert set(enc._fast._graphs) == {(tuple(layers), True), (tuple(layers), False)}  # one graph each, both ran
    assert all(g is not None for g in enc._fast._graphs.values())
    assert enc._fast.graph_path(layers, raw=True) != enc._fast.graph_path(layers)  # normalisation is in the key
    enc.runtime = "eager"
    eager_raw, eager_float = enc.forward(raw, layers), enc.forward(floats, layers)
    for name in layers:
        np.testing.assert_array_equal(eager_raw[name].numpy(), eager_float[name].numpy())  # same float32 ops
        _close(fast_raw[name], eager_float[name])
        _close(fast_float[name], eager_float[name])
    column = Column("image", [p.name for p in tux_images[:4]], tux_images[:4], np.arange(4))
    stored = EmbeddingStore(tmp_path / "store").encode(column, create_encoder(timm_spec), batch_size=4,
                                                      num_workers=1, progress=False)["final"]
    _close(stored.vectors(), eager_float["final"])


def test_file_hashes_follow_the_file_not_its_path(tmp_path):
    from modalign.utils.hashing import hash_bytes, hash_file

    f = tmp_path / "a.bin"
    f.write_bytes(b"one content")
    link = tmp_path / "link.bin"
    link.symlink_to(f)
    assert hash_file(f) == hash_file(link) == hash_file(tmp_path / "." / "a.bin") == hash_bytes(b"one content")
    st = f.stat()
    f.write_bytes(b"two content")  # same size; mtime put back: the change time still tells
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_mtime_ns == st.st_mtime_ns and f.stat().st_size == st.st_size
    assert hash_file(f) == hash_file(link) == hash_bytes(b"two content")


def test_a_bad_graph_falls_back_to_eager_with_one_warning(cache_home, timm_spec, tux_images, caplog):
    enc = create_encoder(timm_spec)
    batch = enc.collate([enc.load(p) for p in tux_images[:2]])
    first = enc.layer_names()[0]
    enc.forward(batch, [first])
    enc.forward(batch, ["final"])
    other, graph = enc._fast.graph_path([first]), enc._fast.graph_path(["final"])
    shutil.copy(other, graph)  # a valid graph with the wrong outputs under the final layer's name
    enc.runtime = "eager"
    expected = enc.forward(batch, ["final"])["final"]

    broken = create_encoder(timm_spec)
    with caplog.at_level(logging.WARNING, logger="modalign.encoders.fast_path"):
        out = [broken.forward(batch, ["final"])["final"] for _ in range(2)]
    assert caplog.text.count("running eager torch") == 1 and "disagrees with eager torch" in caplog.text
    assert not graph.exists()  # removed: the next process exports afresh
    for o in out:
        np.testing.assert_array_equal(o.numpy(), expected.numpy())

    graph.write_bytes(b"not an onnx graph")
    strict = create_encoder(timm_spec)
    strict.runtime = "onnx"
    with pytest.raises(ConfigError, match="runtime 'onnx'.*fast path failed"):
        strict.forward(batch, ["final"])


def test_runtime_setting_is_checked(timm_spec, monkeypatch):
    monkeypatch.setenv("MODALIGN_RUNTIME", "turbo")
    enc = create_encoder(timm_spec)
    with pytest.raises(ConfigError, match="unknown runtime 'turbo'.*auto, eager, onnx"):
        _ = enc.runtime
    with pytest.raises(ConfigError, match="unknown runtime"):
        enc.runtime = "fast"


# ---- decoding in worker processes ---------------------------------------------------------------
def test_decode_processes_give_the_inline_results(cache_home, timm_spec, tux_root, tmp_path, monkeypatch):
    pngs = sorted(tux_root.glob("animals/*/*.png"))[:58]
    svgs = sorted(tux_root.glob("**/*.svg"))[:4]  # rendered by resvg, which holds the GIL
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(os.urandom(64))
    items = [*pngs, *svgs, corrupt, tmp_path / "missing.png"]
    assert len(items) >= encode_plan.PROCESS_MIN_ITEMS
    column = Column("image", [f"i{k}" for k in range(len(items))], items, np.arange(len(items)))
    enc = create_encoder(timm_spec)
    started = []
    original = encode_plan._start_processes
    monkeypatch.setattr(encode_plan, "_start_processes", lambda n: started.append(n) or original(n))
    procs = EmbeddingStore(tmp_path / "a").encode(column, enc, batch_size=8, num_workers=2, progress=False)["final"]
    assert started == [2]
    inline = EmbeddingStore(tmp_path / "b").encode(column, enc, batch_size=8, num_workers=0, progress=False)["final"]
    np.testing.assert_array_equal(procs.valid, inline.valid)
    assert procs.skipped == inline.skipped and set(procs.skipped) >= {f"i{len(items) - 2}", f"i{len(items) - 1}"}
    np.testing.assert_allclose(procs.vectors(), inline.vectors(), rtol=1e-6, atol=1e-7)


# ---- the decode cache -----------------------------------------------------------------------------
def test_decode_cache_gives_the_same_pixels_and_survives_damage(tmp_path, tux_root, monkeypatch):
    from modalign.data import decode_cache
    from modalign.data.decode_cache import DECODE_CACHE_ENV
    from modalign.data.image_transform import ImageDecoder, ImageTransform, image_decoder

    files = [*sorted(tux_root.glob("animals/*/*.png"))[:3], *sorted(tux_root.glob("**/*.svg"))[:1]]
    transform = ImageTransform(size=64)
    plain = [ImageDecoder(transform)(f) for f in files]
    monkeypatch.setenv(DECODE_CACHE_ENV, str(tmp_path / "decoded"))
    decoder = image_decoder(transform)
    first, again = [decoder(f) for f in files], [decoder(f) for f in files]
    cached = sorted((tmp_path / "decoded").rglob("*.npy"))
    assert len(cached) == len(files)  # one (64, 64, 3) uint8 file per image, then read back
    for a, b, c in zip(plain, first, again, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    with monkeypatch.context() as m:  # a hit reads only the cached pixels: the hash is hash_file's, memoised
        m.setattr(decode_cache, "read_image_file", _no_read)
        assert all(np.array_equal(a, decoder(f)) for a, f in zip(plain, files, strict=True))
    raw = image_decoder(transform, raw=True)(files[0])  # what the store's loop loads: pixels, not normalised
    assert raw.dtype == np.uint8 and raw.shape == (64, 64, 3)
    np.testing.assert_array_equal(transform.normalise(raw), plain[0])
    cached[0].write_bytes(b"torn")  # a damaged file is a miss, decoded and rewritten
    cached[1].write_bytes(cached[1].read_bytes()[:-5])  # a valid header, pixels cut short: a miss too
    assert all(np.array_equal(a, decoder(f)) for a, f in zip(plain, files, strict=True))
    assert np.load(cached[0]).shape == np.load(cached[1]).shape == (64, 64, 3)
    other = image_decoder(ImageTransform(size=32))(files[0])  # other resize settings: another folder
    assert other.shape == (3, 32, 32) and len(list((tmp_path / "decoded").iterdir())) == 2
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png" * 10)
    with pytest.raises(InvalidItem) as first_error:
        decoder(corrupt)
    assert decoder.is_cached(corrupt) and not decoder.is_cached(tmp_path / "missing.png")  # its reason is kept
    with pytest.raises(InvalidItem) as again_error:
        decoder(corrupt)
    assert str(again_error.value) == str(first_error.value)
    monkeypatch.setenv(DECODE_CACHE_ENV, "off")
    assert image_decoder(transform).cache is None


def _no_read(path: Path) -> bytes:
    raise AssertionError(f"{path} was read on a decode cache hit")


# ---- text encoders' fast path -------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A sentence-transformers model (BERT, 2 layers, 32 wide, random weights, minilm's tokenizer) that exports fast."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    from modalign.encoders.packaged_text import minilm_path

    torch.manual_seed(2)
    word = models.Transformer(str(minilm_path()))
    cfg = BertConfig(vocab_size=word.auto_model.config.vocab_size, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64)
    word.auto_model = BertModel(cfg).eval()
    folder = tmp_path_factory.mktemp("st") / "tiny"
    SentenceTransformer(modules=[word, models.Pooling(32), models.Normalize()], device="cpu").save(str(folder))
    return f"st:{folder}"


def test_text_fast_path_matches_eager_and_the_peer(cache_home, tiny_st, tux_images):
    caps = [caption_of(p) for p in tux_images[:6]] + ["a much longer caption, " * 8]
    enc = create_encoder(tiny_st)
    batch = enc.collate(caps)
    layers = ["final", "hidden.1", "embeddings"]
    fast = enc.forward(batch, layers)
    assert enc._fast is not None and enc._fast._graphs[tuple(layers), False] is not None  # ONNX Runtime ran
    assert enc._fast.graph_path(layers).is_file()
    enc.runtime = "eager"
    eager = enc.forward(batch, layers)
    for name in layers:
        _close(fast[name], eager[name])
    enc.runtime = "onnx"
    shorter = enc.forward(enc.collate(caps[:2]), ["final"])["final"]  # another batch size and length
    _close(shorter, enc.st.encode(caps[:2], convert_to_numpy=True))
