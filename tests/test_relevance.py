"""Calibrated relevance and adaptive top-k: the fit, the cut, storage beside the index, CLI and HTTP API."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from modalign.errors import ConfigError
from modalign.search.relevance import (
    CutPolicy,
    RelevanceCalibration,
    _newton_logistic,
    cut,
    fit_calibration,
    load_calibrations,
    save_calibration,
)

pytest.importorskip("faiss", reason="the search extra (faiss-cpu) is not installed")


def _clustered(n_per: int, n_classes: int = 4, d: int = 16, noise: float = 0.6, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, d))
    labels = np.repeat(np.arange(n_classes), n_per)
    return centres[labels] + noise * rng.normal(size=(len(labels), d)), labels


def test_newton_recovers_known_logistic_parameters():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 200_000)
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-(6.0 * x - 2.0)))).astype(float)
    a, b = _newton_logistic(x, y, np.ones_like(x))
    assert a == pytest.approx(6.0, rel=0.05) and b == pytest.approx(-2.0, rel=0.05)


def test_calibration_is_monotone_and_matches_observed_rates():
    x, labels = _clustered(60)
    qx, ql, ix, il = x[0::2], labels[0::2], x[1::2], labels[1::2]  # 120 queries, 120 items, 4 classes each
    cal = fit_calibration(qx, ix, ql, il, "image")
    assert cal.slope > 0 and cal.n_pairs == 120 * 120 and cal.n_relevant == (ql[:, None] == il[None, :]).sum()
    grid = np.linspace(-1, 1, 201)
    p = cal(grid)
    assert np.all(np.diff(p) >= 0) and 0 <= p.min() < p.max() <= 1
    # calibrated: the mean predicted relevance equals the observed rate of relevant pairs
    q = qx / np.linalg.norm(qx, axis=1, keepdims=True)
    it = ix / np.linalg.norm(ix, axis=1, keepdims=True)
    assert cal(q @ it.T).mean() == pytest.approx(cal.n_relevant / cal.n_pairs, rel=1e-3)
    assert cal(np.array([cal.threshold(0.5)]))[0] == pytest.approx(0.5, abs=1e-6)


def test_scores_that_anti_correlate_give_a_flat_map_and_a_warning(caplog):
    x, labels = _clustered(30)
    with caplog.at_level(logging.WARNING, logger="modalign"):
        cal = fit_calibration(x, x, labels, (labels + 1) % 4, "image")  # "relevant" = a different cluster
    assert cal.slope == 0 and "relevance falls with the score" in caplog.text
    assert np.ptp(cal(np.linspace(-1, 1, 11))) == 0


def test_self_pairs_are_left_out_and_one_sided_labels_are_refused():
    x, labels = _clustered(10)
    cal = fit_calibration(x, x, labels, labels, "image", exclude_same=np.arange(len(x)))
    assert cal.n_pairs == len(x) * (len(x) - 1)
    with pytest.raises(ConfigError, match="both relevant and irrelevant"):
        fit_calibration(x, x, np.zeros(len(x)), np.ones(len(x)), "image")


def test_cut_is_bounded_deterministic_and_follows_its_rules():
    scores = np.array([0.9, 0.88, 0.87, 0.6, 0.58, 0.57, 0.3, 0.29])
    rel = np.linspace(0.95, 0.1, len(scores))
    assert cut(scores, rel, CutPolicy(k=3)) == 3  # fixed k, relevance ignored
    assert cut(scores, None, CutPolicy(adaptive_k=True, k_max=8)) == 3  # largest gap: 0.87 -> 0.6
    assert cut(scores, None, CutPolicy(adaptive_k=True, k_max=2)) == 1  # bounded by k_max
    assert cut(scores, rel, CutPolicy(min_relevance=0.5, k_max=8)) == int((rel >= 0.5).sum())
    assert cut(scores, rel, CutPolicy(min_relevance=0.99, k_max=8)) == 0  # nothing relevant enough: nothing
    assert cut(scores, None, CutPolicy(adaptive_k=True, k_max=8, k_min=4)) == 6  # gap 0.57 -> 0.3 after rank 6
    ties = np.array([1.0, 0.75, 0.5, 0.25])  # equal gaps: the first one wins
    assert cut(ties, None, CutPolicy(adaptive_k=True, k_max=4)) == 1
    rng = np.random.default_rng(0)
    for _ in range(200):
        s = np.sort(rng.random(rng.integers(1, 40)))[::-1]
        p = CutPolicy(adaptive_k=True, k_max=int(rng.integers(1, 30)), min_relevance=None)
        n = cut(s, None, p)
        assert 1 <= n <= min(len(s), p.k_max) and n == cut(s.copy(), None, p)
    with pytest.raises(ConfigError, match="needs a relevance calibration"):
        cut(scores, None, CutPolicy(min_relevance=0.5))
    with pytest.raises(ConfigError, match="min_relevance must lie"):
        CutPolicy(min_relevance=1.5)


def test_stored_with_the_index_and_ignored_in_another_space(tmp_path, caplog):
    cal = RelevanceCalibration(5.0, -2.0, "text", "label", 10, 20, 100, "tuxpaint (val)")
    save_calibration(tmp_path, cal, space="abc")
    save_calibration(tmp_path, RelevanceCalibration(8.0, -6.0, "image", "label", 5, 5, 25), space="abc")
    cals = load_calibrations(tmp_path, "abc")
    assert set(cals) == {"text", "image"} and cals["text"] == cal
    with caplog.at_level(logging.WARNING, logger="modalign"):
        assert load_calibrations(tmp_path, "other") == {}
    assert "fitted in embedding space abc" in caplog.text
    save_calibration(tmp_path, cal, space="new")  # a new space starts over: the old image map is dropped
    assert set(load_calibrations(tmp_path, "new")) == {"text"}


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, tux_images):
    """A real index of 12 stamps (tiny model), with an image->image calibration from their sub-folders."""
    import shutil

    from modalign.data.registry import load_labelled_dataset
    from modalign.store import EmbeddingStore
    from modalign.workflows.calibrate import calibrate_index
    from test_service import make_search_setup

    root = tmp_path_factory.mktemp("rel")
    index, model = make_search_setup(root, tux_images)
    tree = root / "tree"
    for png in tux_images:
        (tree / png.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, tree / png.parent.name / png.name)
    cal = calibrate_index(index, model, load_labelled_dataset(str(tree)), EmbeddingStore(root / "s"), progress=False)
    return index, model, cal, root


def test_calibrate_index_writes_relevance_json_beside_the_index(calibrated):
    from modalign.search.index import SearchIndex

    index, _, cal, _ = calibrated
    assert cal.query_modality == "image" and cal.n_queries == 12 and cal.n_pairs == 12 * 11
    assert cal.slope > 0  # stamps of one sub-folder look alike even through a random projection
    reopened = SearchIndex.open(index.folder)
    assert load_calibrations(reopened.folder, reopened.info.space) == {"image": cal}


def test_cli_search_returns_relevance_and_a_bounded_adaptive_set(calibrated, tux_images, capsys):
    from modalign.cli.main import main

    index, _, cal, _ = calibrated
    rc = main(["search", str(index.folder), "--image", str(tux_images[0]), "--adaptive-k", "--k-max", "5",
               "--json", "-q"])
    assert rc == 0
    hits = json.loads(capsys.readouterr().out)
    assert 1 <= len(hits) <= 5 and hits[0]["key"] == tux_images[0].name
    assert all("relevance" in h for h in hits) and hits[0]["relevance"] == pytest.approx(float(cal(1.0)), abs=1e-3)
    rc = main(["search", str(index.folder), "--image", str(tux_images[0]), "--min-relevance", "0.999999",
               "--json", "-q"])
    assert rc == 0 and len(json.loads(capsys.readouterr().out)) <= 1
    # text queries have no calibration here: asking for min relevance says how to get one
    assert main(["search", str(index.folder), "a bird", "--min-relevance", "0.5", "-q"]) == 1


def test_http_api_cuts_and_reports_relevance(calibrated, tux_images):
    pytest.importorskip("fastapi", reason="the search extra (fastapi) is not installed")
    from fastapi.testclient import TestClient

    from modalign.search.service import ServiceConfig, create_app

    index, model, cal, _ = calibrated
    key = {"Authorization": "Bearer k"}
    with TestClient(create_app(index, model, ServiceConfig(api_key="k"))) as c:
        assert c.get("/ready", headers=key).json()["relevance"] == ["image"]
        with open(tux_images[3], "rb") as f:
            data = f.read()
        r = c.post("/search/image?adaptive_k=true&k_max=4", files={"file": ("q.png", data, "image/png")}, headers=key)
        hits = r.json()["results"]
        assert r.status_code == 200 and 1 <= len(hits) <= 4 and all(0 <= h["relevance"] <= 1 for h in hits)
        p = float(cal(hits[0]["score"]))
        r = c.post(f"/search/image?min_relevance={p - 1e-4:.6f}&k_max=10", files={"file": ("q.png", data, "image/png")},
                   headers=key)
        assert all(h["relevance"] >= p - 2e-4 for h in r.json()["results"]) and len(r.json()["results"]) >= 1
        plain = c.post("/search/text", json={"text": "a bird", "k": 3}, headers=key).json()["results"]
        assert len(plain) == 3 and "relevance" not in plain[0]  # no text calibration: raw scores only
        r = c.post("/search/text", json={"text": "a bird", "min_relevance": 0.5}, headers=key)
        assert r.status_code == 400 and "modalign index calibrate" in r.json()["error"]
        r = c.post("/search/text", json={"text": "a bird", "adaptive_k": True, "k_max": 1000}, headers=key)
        assert r.status_code == 400 and "k_max" in r.json()["error"]


def test_web_page_sends_the_cut_and_shows_relevance(calibrated, tux_images):
    """The page in headless Chromium: an image query with min relevance + adaptive k shows a bounded set, each
    hit with its calibrated relevance beside the score."""
    from pathlib import Path

    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium is absent (Debian package chromium)")
    pytest.importorskip("playwright", reason="playwright (search extra) is not installed")
    from playwright.sync_api import sync_playwright
    from uvicorn import Config, Server

    from modalign.search.service import ServiceConfig, create_app
    from test_web_e2e import _free_port

    index, model, _, _ = calibrated
    port = _free_port()
    server = Server(Config(create_app(index, model, ServiceConfig(api_key="k")), host="127.0.0.1", port=port,
                           log_level="warning"))
    import threading
    import time

    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox",
                                                                                     "--disable-gpu"])
            page = browser.new_page()
            urls: list[str] = []
            page.on("request", lambda req: urls.append(req.url))
            page.goto(f"http://127.0.0.1:{port}/")
            page.fill("#key", "k")
            page.fill("#minrel", "0.01")
            page.check("#adaptive")
            page.fill("#kmax", "3")
            page.set_input_files("#file", str(tux_images[5]))
            page.wait_for_selector(".hit .relevance", timeout=30_000)
            rel = page.locator(".relevance").all_inner_texts()
            assert 1 <= len(rel) <= 3 and all(0 <= float(t.split()[-1]) <= 1 for t in rel)
            assert page.locator(".hit").count() == len(rel)
            sent = [u for u in urls if "/search/image" in u]
            assert sent and all(x in sent[0] for x in ("min_relevance=0.01", "adaptive_k=true", "k_max=3"))
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
