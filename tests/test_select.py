"""Similarity metrics (known values, dense references, chunking, bad input), encoder/layer ranking on real
stamps through the store, `modalign select`, and multi-layer towers (concat / mean) with save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import caption_of
from modalign.select import metrics as M
from modalign.select.metrics import cknna, compute_metric, linear_cka, list_metrics, mutual_knn, unbiased_cka

ALL = ["linear_cka", "unbiased_cka", "mutual_knn", "cknna"]


def _related(n=300, noise=0.5, seed=0):
    """Two views of one latent: Y is a nonlinear, noisy function of the same 8-d latent as X."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 8))
    x = z @ rng.normal(size=(8, 40)) + 0.5 * rng.normal(size=(n, 40))
    y = np.tanh(z @ rng.normal(size=(8, 30))) + noise * rng.normal(size=(n, 30))
    return x, y


def _orthogonal(d, seed=1):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


# ---- dense references: the papers' n x n formulas (Huh et al.'s platonic-rep code, ported) -------------------
def _hsic_u(k, lm):
    m = k.shape[0]
    kt, lt = k.clone().fill_diagonal_(0), lm.clone().fill_diagonal_(0)
    v = (kt * lt.T).sum() + kt.sum() * lt.sum() / ((m - 1) * (m - 2)) - 2 * (kt @ lt).sum() / (m - 2)
    return v / (m * (m - 3))


def _unit(x):
    t = torch.tensor(x - x.mean(0), dtype=torch.float64)
    return torch.nn.functional.normalize(t, dim=1)


def _ref_unbiased_cka(x, y):
    xc, yc = torch.tensor(x - x.mean(0)), torch.tensor(y - y.mean(0))
    k, lm = xc @ xc.T, yc @ yc.T
    return float(_hsic_u(k, lm) / torch.sqrt(_hsic_u(k, k) * _hsic_u(lm, lm)))


def _ref_mutual_knn(x, y, k):
    a, b = _unit(x), _unit(y)
    nn_a = (a @ a.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :k]
    nn_b = (b @ b.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :k]
    return float(np.mean([len(set(p.tolist()) & set(q.tolist())) / k for p, q in zip(nn_a, nn_b, strict=True)]))


def _ref_cknna(x, y, k):
    a, b = _unit(x), _unit(y)
    kk, ll = a @ a.T, b @ b.T
    n = len(a)

    def sim(p, q):
        ip = p.clone().fill_diagonal_(float("-inf")).topk(k, 1).indices
        iq = q.clone().fill_diagonal_(float("-inf")).topk(k, 1).indices
        mask = (torch.zeros(n, n, dtype=torch.float64).scatter_(1, ip, 1)
                * torch.zeros(n, n, dtype=torch.float64).scatter_(1, iq, 1))
        return _hsic_u(mask * p, mask * q)

    return float(sim(kk, ll) / torch.sqrt(sim(kk, kk) * sim(ll, ll)))


# ---- metrics: known values -----------------------------------------------------------------------------------
def test_identity_rotation_and_scaling_give_one():
    x, _ = _related()
    xq = x @ _orthogonal(x.shape[1])
    for name in ALL:
        assert compute_metric(name, x, x, k=10) == pytest.approx(1.0, abs=1e-9), name
        assert compute_metric(name, x, xq, k=10) == pytest.approx(1.0, abs=1e-6), name
        assert compute_metric(name, x, 3.7 * xq + 2.0, k=10) == pytest.approx(1.0, abs=1e-6), name  # scale, shift


def test_scores_fall_with_noise_and_independent_features_score_near_zero():
    for name in ALL:
        clean, noisy = (compute_metric(name, *_related(noise=s), k=10) for s in (0.2, 3.0))
        assert 0.2 < clean < 0.95 and noisy < clean - 0.1, (name, clean, noisy)
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(1000, 10)), rng.normal(size=(1000, 12))
    assert linear_cka(a, b) < 0.03  # biased: about d1 d2 / n-ish; small here since n >> d
    assert abs(unbiased_cka(a, b)) < 0.01
    assert mutual_knn(a, b, k=10) < 0.03  # chance is k / (n - 1) = 0.01
    assert abs(cknna(a, b, k=10)) < 0.05
    wide_a, wide_b = rng.normal(size=(100, 200)), rng.normal(size=(100, 200))  # d > n: the biased CKA inflates
    assert linear_cka(wide_a, wide_b) > 0.4 and abs(unbiased_cka(wide_a, wide_b)) < 0.05


def test_metrics_match_the_dense_n_by_n_formulas():
    x, y = _related(n=150)
    assert unbiased_cka(x, y) == pytest.approx(_ref_unbiased_cka(x, y), abs=1e-9)
    assert mutual_knn(x, y, k=7) == pytest.approx(_ref_mutual_knn(x, y, 7), abs=1e-9)
    assert cknna(x, y, k=7) == pytest.approx(_ref_cknna(x, y, 7), abs=1e-6)
    xc, yc = x - x.mean(0), y - y.mean(0)
    k, lm = xc @ xc.T, yc @ yc.T
    assert linear_cka(x, y) == pytest.approx((k * lm).sum() / np.sqrt((k * k).sum() * (lm * lm).sum()), abs=1e-9)


def test_chunked_equals_unchunked(monkeypatch):
    x, y = _related(n=120)
    whole = {m: compute_metric(m, x, y, k=5) for m in ALL}
    monkeypatch.setattr(M, "ROW_BLOCK", 7)  # Gram accumulation in blocks of 7 rows
    monkeypatch.setattr(M, "KNN_BLOCK_ELEMENTS", 120 * 3)  # kNN search 3 query rows at a time
    for m in ALL:
        assert compute_metric(m, x, y, k=5) == pytest.approx(whole[m], abs=1e-10), m
    assert mutual_knn(x, y, k=5, block=1) == whole["mutual_knn"]


def test_duplicates_and_constant_features():
    x, y = _related(n=200)
    x[:15], y[:15] = x[0], y[0]  # 15 copies of one item: ties straddle the 10th neighbour
    xq = x @ _orthogonal(x.shape[1])
    assert mutual_knn(x, xq, k=10) == 1.0 and cknna(x, xq, k=10) == pytest.approx(1.0, abs=1e-6)
    idx, _ = M.Features(x).knn(10)
    assert sorted(idx[0].tolist()) == list(range(1, 11))  # ties go to the lowest indices
    assert np.array_equal(idx, M.Features(x).knn(10, block=4)[0])
    with_const = np.hstack([x, np.full((200, 3), 5.0)])  # constant features carry nothing
    for m in ALL:
        assert compute_metric(m, with_const, y, k=10) == pytest.approx(compute_metric(m, x, y, k=10), abs=1e-9)


def test_bad_input_is_refused_with_a_clear_error():
    x, y = _related(n=30)
    bad = x.copy()
    bad[0, 0], bad[3, 1] = np.nan, np.inf
    with pytest.raises(ValueError, match="2 NaN/inf"):
        linear_cka(bad, y)
    with pytest.raises(ValueError, match=r"at least 31 items .*k=30"):
        mutual_knn(x, y, k=30)
    with pytest.raises(ValueError, match="same items row by row; got 30 and 29"):
        cknna(x, y[:29], k=3)
    with pytest.raises(ValueError, match="every feature of X is constant"):
        unbiased_cka(np.ones((30, 4)), y)
    with pytest.raises(ValueError, match="at least 4 items"):
        unbiased_cka(x[:3], y[:3])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        mutual_knn(x, y, k=0)


def test_registry():
    assert set(ALL) <= set(list_metrics())
    with pytest.raises(ValueError, match="unknown similarity metric 'nope'; known: .*cknna"):
        compute_metric("nope", np.eye(3), np.eye(3))
    M.register_metric("test_neg_cka", lambda a, b: -linear_cka(a, b), "negated linear CKA")
    try:
        x, y = _related(n=50)
        assert compute_metric("test_neg_cka", x, y) == pytest.approx(-linear_cka(x, y))
    finally:
        M.METRICS.remove("test_neg_cka")


# ---- ranking on real stamps ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from modalign.store import EmbeddingStore

    return EmbeddingStore(tmp_path_factory.mktemp("store"))


class CountingStore:
    """Records what each store.encode call asked for."""

    def __init__(self, store):
        self.store, self.calls = store, []

    def encode(self, column, encoder, layers, **kw):
        self.calls.append((encoder.spec, column.modality, list(layers)))
        return self.store.encode(column, encoder, layers, **kw)


def test_selection_ranks_every_pairing_encoding_each_encoder_once(pairs_dir, store):
    from modalign.data.pairs import load_pairs
    from modalign.select.ranking import SelectConfig, run_selection

    data = load_pairs(pairs_dir / "pairs.csv")
    counting = CountingStore(store)
    cfg = SelectConfig(encoders={"image": ["effnet-lite0"], "text": ["minilm-l6"]},
                       layers={"effnet-lite0": ["blocks.12", "final"], "minilm-l6": ["hidden.3", "final"]}, k=3)
    result = run_selection(data, cfg, counting, progress=False)
    assert counting.calls == [("effnet-lite0", "image", ["blocks.12", "final"]),
                              ("minilm-l6", "text", ["hidden.3", "final"])]
    assert result.n_probe == 12 and len(result.scores) == 4
    ranked = [s.scores["mutual_knn"] for s in result.scores]
    assert ranked == sorted(ranked, reverse=True)
    assert all(0 < s.scores["linear_cka"] <= 1 for s in result.scores)
    best = result.scores[0]
    assert result.best_layers == {"effnet-lite0": best.a.layer, "minilm-l6": best.b.layer}
    assert result.layers == {"effnet-lite0": ["blocks.12", "final"], "minilm-l6": ["hidden.3", "final"]}


def test_candidate_layers_and_probe_rows():
    from modalign.data.column import AlignedDataset, Column
    from modalign.encoders import create_encoder
    from modalign.select.ranking import candidate_layers, probe_rows

    enc = create_encoder("minilm-l6")  # embeddings, hidden.1 ... hidden.6, final
    assert candidate_layers(enc, step=3) == ["hidden.1", "hidden.4", "final"]
    assert candidate_layers(enc, ["-1", "hidden.2"]) == ["final", "hidden.2"]
    # 3 groups; group 1 has two captions, group 2 no image
    data = AlignedDataset("t", {"image": Column("image", ["a", "b"], ["a", "b"], [0, 1]),
                                "text": Column("text", ["x", "y", "z", "w"], ["x", "y", "z", "w"], [0, 1, 1, 2])},
                          ["g0", "g1", "g2"])
    assert {m: r.tolist() for m, r in probe_rows(data, ("image", "text"), n=10).items()} == \
        {"image": [0, 1], "text": [0, 1]}


def test_select_cli_writes_ranking_and_heatmap(pairs_dir, tmp_path, store, capsys):
    from modalign.cli.main import main

    out = tmp_path / "sel"
    rc = main(["select", "--pairs", str(pairs_dir / "pairs.csv"), "--image", "effnet-lite0",
               "--layers", "effnet-lite0=blocks.14,final", "--layers", "minilm-l6=hidden.3,final",
               "--metric", "cknna", "--k", "3", "--out", str(out), "--store", str(store.root), "-q"])
    assert rc == 0
    report = json.loads((out / "selection.json").read_text())
    assert report["rank_by"] == "cknna" and len(report["ranking"]) == 4 and report["n_probe"] == 12
    assert [r["rank"] for r in report["ranking"]] == [1, 2, 3, 4]
    assert set(report["best_layers"]) == {"effnet-lite0", "minilm-l6"}
    png = out / report["heatmaps"]["effnet-lite0 x minilm-l6"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "best layer per encoder" in capsys.readouterr().out


# ---- several layers per tower ---------------------------------------------------------------------------------
def test_single_layer_tower_config_reads_and_writes_as_before():
    from modalign.model import TowerConfig

    old = {"modality": "image", "encoder": "effnet-lite0", "layer": "final", "input_dim": 1280,
           "encoder_fingerprint": "abc", "projector": {"type": "linear", "out_dim": 8}}
    tower = TowerConfig.from_dict(old)  # a config.json written before layer lists existed
    assert tower.layer == "final" and tower.layers == ["final"] and tower.layer_mix == "concat"
    assert "layer_mix" not in tower.to_dict()
    assert TowerConfig("image", "e", ["final"], 1280, "x").layer == "final"  # a one-element list is a layer
    many = TowerConfig("image", "e", ["blocks.12", "final"], 1472, "x", layer_mix="mean")
    assert TowerConfig.from_dict(json.loads(json.dumps(many.to_dict()))) == many


def test_concat_tower_round_trip_on_real_images(tmp_path, tux_images, store):
    from modalign.align.projectors import ProjectorConfig
    from modalign.data.column import Column
    from modalign.encoders import create_encoder
    from modalign.encoders.layers import encode_layers
    from modalign.features.pipeline import encode_column
    from modalign.model import AlignedModel, TowerConfig

    img_enc, txt_enc = create_encoder("effnet-lite0"), create_encoder("minilm-l6")
    proj = ProjectorConfig(type="mlp", out_dim=32, hidden_dim=64)
    towers = {"image": TowerConfig("image", "effnet-lite0", ["blocks.12", "final"], 192 + 1280,
                                   img_enc.fingerprint(), proj),
              "text": TowerConfig("text", "minilm-l6", "final", 384, txt_enc.fingerprint(), proj)}
    torch.manual_seed(0)
    model = AlignedModel(towers)
    model.set_encoder("image", img_enc)
    model.set_encoder("text", txt_enc)
    images = tux_images[:4]
    emb = model.encode_image(images)  # one forward pass per batch gives both layers
    assert emb.shape == (4, 32)
    # the stored path (two store entries side by side) gives the same features as the forward path
    column = Column("image", [p.name for p in images], images, np.arange(4))
    stacked = encode_column(store, column, img_enc, ["blocks.12", "final"], progress=False)
    raw = encode_layers(img_enc, images, ["blocks.12", "final"])
    assert stacked.dim == 1472 and np.allclose(stacked.vectors(), raw, atol=1e-5)
    assert np.allclose(raw[:, 192:], img_enc.encode(images, "final"), atol=1e-5)
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["towers"]["image"]["layer"] == ["blocks.12", "final"]
    assert cfg["towers"]["image"]["layer_mix"] == "concat" and "layer_mix" not in cfg["towers"]["text"]
    loaded = AlignedModel.from_pretrained(tmp_path)
    assert torch.equal(loaded.encode_image(images), emb)
    assert torch.equal(loaded.encode_text([caption_of(p) for p in images]),
                       model.encode_text([caption_of(p) for p in images]))


def test_train_cli_with_several_layers_and_a_mean_mix(pairs_dir, tmp_path, store):
    from modalign.cli.main import main
    from modalign.model import AlignedModel

    out = tmp_path / "run"
    rc = main(["train", "--pairs", str(pairs_dir / "pairs.csv"), "--out", str(out), "--store", str(store.root),
               "--image-layer", "blocks.12", "--image-layer", "final", "--text-layer", "hidden.3,final",
               "--layer-mix", "text=mean", "--epochs", "2", "--hidden-dim", "32", "--out-dim", "16", "-q"])
    assert rc == 0
    fit_cfg = json.loads((out / "fit_config.json").read_text())
    assert fit_cfg["layers"] == {"image": ["blocks.12", "final"], "text": ["hidden.3", "final"]}
    model = AlignedModel.from_pretrained(out)
    image, text = model.towers["image"], model.towers["text"]
    assert image.input_dim == 1472 and text.input_dim == 768 and text.layer_mix == "mean"
    weights = model.projectors["text"].layer_weights()
    assert weights.shape == (2,) and float(weights.detach().sum()) == pytest.approx(1.0)
    assert model.encode_text(["a red car", "a bird"]).shape == (2, 16)
    baseline = AlignedModel.from_pretrained(out / "baselines" / "ridge")  # fitted on the stacked features
    assert baseline.towers["text"].layer_mix == "concat" and baseline.towers["text"].input_dim == 768


def test_mean_mix_needs_layers_of_one_width():
    from modalign.encoders import create_encoder
    from modalign.errors import ConfigError
    from modalign.workflows.fit import tower_config

    with pytest.raises(ConfigError, match=r"one width, got widths \[192, 1280\].*concat"):
        tower_config("image", create_encoder("effnet-lite0"), ["blocks.12", "final"], "mean")


def test_selection_errors_name_the_problem(pairs_dir, store):
    from modalign.data.pairs import load_pairs
    from modalign.errors import ConfigError
    from modalign.select.ranking import SelectConfig, run_selection

    data = load_pairs(pairs_dir / "pairs.csv")
    with pytest.raises(ConfigError, match="unknown similarity metric 'cka2'"):
        run_selection(data, SelectConfig(encoders={"image": ["effnet-lite0"], "text": ["minilm-l6"]},
                                         rank_by="cka2"), store, progress=False)
    cfg = SelectConfig(encoders={"image": ["effnet-lite0"], "text": ["minilm-l6"]},
                       layers={"effnet-lite0": ["final"], "minilm-l6": ["final"]}, k=12)
    with pytest.raises(ConfigError, match=r"scoring 12 probe pairs .* at least 13 items"):
        run_selection(data, cfg, store, progress=False)
