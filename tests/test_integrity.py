"""Tampered artifacts are detected and named: NaN/inf written into a stored shard (checksums in the manifest),
and training refuses what would silently give NaN weights and perfect-looking metrics."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from modalign.data.column import Column
from modalign.encoders import create_encoder
from modalign.errors import MismatchError
from modalign.store import EmbeddingStore


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def encoder():
    return create_encoder("effnet-lite0")


@pytest.fixture()
def encoded(tmp_path, tux_images, encoder):
    """A store of 8 stamps in 4 shards of 2, and the column it holds."""
    column = Column("image", [p.name for p in tux_images[:8]], tux_images[:8], np.arange(8))
    store = EmbeddingStore(tmp_path / "store")
    store.encode(column, encoder, shard_size=2, num_workers=0, progress=False)
    return store, column


def _write_nan(npy: Path, row: int) -> None:
    """What a careless edit (or a bad disk) does: same shape and dtype, NaN in one row."""
    arr = np.load(npy)
    arr[row] = np.nan
    np.save(npy, arr)


def test_nan_in_a_copied_store_shard_is_named_on_read(tmp_path, encoded, encoder):
    store, column = encoded
    clean = store.get(column, encoder).vectors()
    copy = EmbeddingStore(tmp_path / "copy")
    shutil.copytree(store.root, copy.root)
    entry = copy.get(column, encoder)
    _write_nan(entry.path / "shard-000002.npy", 1)  # entry row 5

    with pytest.raises(MismatchError, match=r"shard-000002\.npy: its vectors do not match the checksum"):
        copy.get(column, encoder).vectors()
    with pytest.raises(MismatchError, match=r"shard-000002\.npy"):  # a read of other rows of that shard too
        copy.get(column, encoder).vectors([4])
    np.testing.assert_array_equal(copy.get(column, encoder).vectors([0, 1, 7]), clean[[0, 1, 7]])

    # an entry without checksums (or with an edited manifest) is still caught by the finiteness check
    manifest = entry.path / "manifest.json"
    raw = json.loads(manifest.read_text())
    raw["checksums"] = None
    manifest.write_text(json.dumps(raw))
    with pytest.raises(MismatchError, match=r"shard-000002\.npy: NaN/inf in entry row\(s\) 5"):
        copy.get(column, encoder).vectors()


def test_encode_computes_a_tampered_shard_again(tmp_path, encoded, encoder, caplog):
    store, column = encoded
    clean = store.get(column, encoder).vectors()
    _write_nan(store.get(column, encoder).path / "shard-000001.npy", 0)
    with caplog.at_level(logging.WARNING, logger="modalign.store"):
        again = store.encode(column, encoder, shard_size=2, num_workers=0, progress=False)["final"]
    assert "shard 1 is damaged" in caplog.text and "checksum" in caplog.text
    assert (again.report.shards_reused, again.report.shards_written) == (3, 1)
    np.testing.assert_array_equal(again.vectors(), clean)


class _Warnings(logging.Handler):
    """Collects warnings of one logger (the CLI replaces the root handlers, so caplog sees nothing)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text += record.getMessage() + "\n"


def test_train_on_a_copied_store_with_nan_repairs_it_and_trains_finite_weights(tmp_path, pairs_dir):
    """The issue's reproduction: NaN written into a copied store's image shard, then `modalign train`.
    Before: exit 0, NaN weights, every recall 1.000. Now the shard is recomputed and training is sound."""
    from modalign.cli.main import main
    from modalign.model import AlignedModel

    args = ["train", "--pairs", str(pairs_dir / "pairs.csv"), "--epochs", "2", "--batch-size", "4", "--out-dim", "16",
            "--hidden-dim", "32", "--no-baselines", "-q"]
    assert main([*args, "--out", str(tmp_path / "first"), "--store", str(tmp_path / "store")]) == 0
    shutil.copytree(tmp_path / "store", tmp_path / "copy")
    (image_entry,) = [m.parent for m in (tmp_path / "copy").glob("*/manifest.json")
                      if json.loads(m.read_text())["key"]["modality"] == "image"]
    _write_nan(image_entry / "shard-000000.npy", 3)
    seen = _Warnings()
    logging.getLogger("modalign.store").addHandler(seen)
    try:
        assert main([*args, "--out", str(tmp_path / "second"), "--store", str(tmp_path / "copy")]) == 0
    finally:
        logging.getLogger("modalign.store").removeHandler(seen)
    assert "shard 0 is damaged" in seen.text and "checksum" in seen.text
    model = AlignedModel.from_pretrained(tmp_path / "second")
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())
    epochs = [json.loads(line) for line in (tmp_path / "second" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(e["train_loss"]) for e in epochs)


def test_index_build_skips_and_counts_nan_vectors_and_refuses_an_all_nan_model(tmp_path, tux_images, encoder,
                                                                               caplog):
    pytest.importorskip("faiss", reason="the search extra (faiss-cpu) is not installed")
    from modalign.align.projectors import ProjectorConfig
    from modalign.errors import ConfigError
    from modalign.model import AlignedModel, TowerConfig
    from modalign.search.build import build_index, load_collection

    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in tux_images[:8]:
        shutil.copy(p, folder / p.name)
    collection = load_collection(str(folder))
    store = EmbeddingStore(tmp_path / "store")
    feats = store.encode(collection.columns["image"], encoder, progress=False)["final"].vectors()  # (8, 1280)
    proj = ProjectorConfig(type="linear", out_dim=8, standardize=False)
    model = AlignedModel({"image": TowerConfig("image", encoder.spec, "final", encoder.dim, encoder.fingerprint(),
                                               proj)})
    model.save_pretrained(tmp_path / "model")  # the index records the model folder it was built with
    j = int(np.argmax(np.median(feats, axis=0)))  # a feature > 1 for half the items
    w = np.float32(np.finfo(np.float32).max / np.median(feats[:, j]))
    with torch.no_grad():  # items whose feature j exceeds the median overflow float32 -> inf -> NaN
        linear = next(m for m in model.projectors["image"].modules() if isinstance(m, torch.nn.Linear))
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[0, j] = float(w)
    with np.errstate(over="ignore"):
        overflow = int(np.isinf(feats[:, j] * w).sum())
    assert 0 < overflow < 8
    with caplog.at_level(logging.WARNING, logger="modalign.search"):
        index = build_index(tmp_path / "model", collection, tmp_path / "idx", store, model=model, progress=False)
    assert len(index) == 8 - overflow
    assert f"skipped {overflow} of 8 image items whose projected vector is NaN/inf" in caplog.text

    with torch.no_grad():
        linear.weight.fill_(float("nan"))
    with pytest.raises(ConfigError, match="gives NaN/inf for every item"):
        build_index(tmp_path / "model", collection, tmp_path / "idx2", store, model=model, progress=False)


class _RunsCode:
    """What a hostile pickle does: loading it calls a function of the attacker's choice."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_distributed_features_files_never_run_code(tmp_path):
    from modalign.align.features import FeatureSet
    from modalign.align.projectors import ProjectorConfig
    from modalign.distributed.train_ddp import load_features, save_features
    from modalign.model import TowerConfig

    towers = {m: TowerConfig(m, "enc", "final", 4, "fp", ProjectorConfig(type="linear", out_dim=2)) for m in ("a", "b")}
    fs = FeatureSet({"a": torch.ones(3, 4), "b": torch.zeros(3, 4)}, {"a": torch.arange(3), "b": torch.arange(3)})
    save_features(tmp_path / "ok.pt", towers, fs)
    loaded, train_fs, val_fs = load_features(tmp_path / "ok.pt")
    assert loaded == towers and torch.equal(train_fs.features["a"], fs.features["a"]) and val_fs is None

    marker = tmp_path / "code-ran"
    torch.save({"towers": {}, "train": _RunsCode(marker), "val": None}, tmp_path / "evil.pt")
    with pytest.raises(MismatchError, match="more than tensors and plain data"):
        load_features(tmp_path / "evil.pt")
    assert not marker.exists()


# ---- edited model bundles (config.json + model.safetensors) ------------------------------------------------------
def _cfg(edit):
    def apply(folder: Path) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        edit(cfg)
        (folder / "config.json").write_text(json.dumps(cfg))
    return apply


def _weights(edit):
    def apply(folder: Path) -> None:
        path = folder / "model.safetensors"
        path.write_bytes(edit(path.read_bytes()))
    return apply


EDITS = {
    "towers missing": (_cfg(lambda c: c.pop("towers")), r"config\.json: missing field 'towers'"),
    "projector missing": (_cfg(lambda c: c["towers"]["image"].pop("projector")),
                          r"config\.json: tower 'image': missing field 'projector'"),
    "input_dim a string": (_cfg(lambda c: c["towers"]["text"].__setitem__("input_dim", "big")),
                           r"tower 'text': field 'input_dim' must be int, got str 'big'"),
    "towers a list": (_cfg(lambda c: c.__setitem__("towers", [1])), r"field 'towers' must be dict, got list"),
    "unknown projector type": (_cfg(lambda c: c["towers"]["image"]["projector"].__setitem__("type", "quantum")),
                               r"config\.json: unknown projector type 'quantum'; known: .*mlp"),
    "depth 1000000": (_cfg(lambda c: c["towers"]["image"]["projector"].__setitem__("depth", 1_000_000)),
                      r"tower 'image': projector depth must be an integer in \[1, 64\], got 1000000"),
    "hidden width 2**20": (_cfg(lambda c: c["towers"]["image"]["projector"].__setitem__("hidden_dim", 2**20)),
                           r"model\.safetensors does not match config\.json: shape mismatch .*1048576"),
    "invalid JSON": (lambda f: (f / "config.json").write_text('{"format": '), r"config\.json: the model config is "
                                                                               r"not valid JSON"),
    "truncated weights": (_weights(lambda b: b[: len(b) // 2]), r"model\.safetensors: tensor .* do not fit|"
                                                                 r"header claims"),
    "huge safetensors header": (_weights(lambda b: (2**60).to_bytes(8, "little") + b"{}"),
                                r"header claims 1152921504606846976 bytes"),
    "NaN weights": (None, r"holds NaN/inf in 1 tensor"),
}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from modalign.align.projectors import ProjectorConfig
    from modalign.model import AlignedModel, TowerConfig

    proj = ProjectorConfig(out_dim=16, hidden_dim=32)
    towers = {m: TowerConfig(m, f"{m}-encoder", "final", d, "fp", proj) for m, d in (("image", 1280), ("text", 384))}
    folder = tmp_path_factory.mktemp("bundle")
    AlignedModel(towers).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case", list(EDITS))
def test_edited_bundles_fail_fast_naming_file_and_field(tmp_path, saved_model, case):
    import resource

    from modalign.model import AlignedModel

    edit, message = EDITS[case]
    folder = tmp_path / "edited"
    shutil.copytree(saved_model, folder)
    if edit is None:  # NaN weights: a model damaged on disk
        model = AlignedModel.from_pretrained(folder)
        with torch.no_grad():
            model.projectors["text"].mlp[0].weight[0, 0] = float("nan")
        model.save_pretrained(folder)
    else:
        edit(folder)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(MismatchError, match=message):
        AlignedModel.from_pretrained(folder)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200, f"{case}: peak memory grew by {grown_mb:.0f} MB before failing"


# ---- file modes ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path, umask):
    from modalign.align.projectors import ProjectorConfig
    from modalign.model import AlignedModel, TowerConfig
    from modalign.utils.io import atomic_write_json

    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        tower = TowerConfig("image", "enc", "final", 4, "fp", ProjectorConfig(type="linear", out_dim=2))
        AlignedModel({"image": tower}).save_pretrained(tmp_path / "model")
        (tmp_path / "plain.txt").write_text("as open() makes it")
    finally:
        os.umask(old)
    expected = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert expected == 0o666 & ~umask
    for p in (tmp_path / "a.json", tmp_path / "model" / "config.json", tmp_path / "model" / "model.safetensors"):
        assert p.stat().st_mode & 0o777 == expected, p
