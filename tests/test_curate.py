"""Curation: concept mining, balanced quotas, near-duplicates, assignment on real stamps, `modalign curate`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from modalign.curate.assign import assign_concepts
from modalign.curate.concepts import concepts_from_file, merge_concepts, mine_concepts, tokenize
from modalign.curate.dedup import near_duplicates
from modalign.curate.run import concept_balance
from modalign.curate.sampling import balanced_sample, quotas
from modalign.errors import ConfigError

FOLDER_CONCEPT = {"birds": "bird", "mammals": "mammal", "fruit": "fruit", "auto": "car", "flowers": "flower",
                  "planets": "planet"}


# ---- concepts ------------------------------------------------------------------------------------------------------
def test_mining_counts_nouns_and_phrases_once_per_caption():
    captions = ["A red car.", "Two cars on the road!", "A sports car, a sports car.", "The sports car is fast",
                "A flower in a pot.", "Yellow flowers", "A flower.", "A happy dog", "a DOG and a cat", "The dog's ball"]
    mined = dict(mine_concepts(captions, top=10, min_count=2))
    assert mined["car"] == 4  # "cars" folds into "car"; the repeated phrase counts once per caption
    assert mined["sports car"] == 2 and mined["flower"] == 3 and mined["dog"] == 2
    assert not {"red", "the", "two", "yellow", "happy", "sports", "road", "cat"} & set(mined)
    assert list(mined)[0] == "car" and len(mine_concepts(captions, top=2, min_count=1)) == 2
    assert tokenize("Tux's HAT!") == ["tux's", "hat"]


def test_concept_files_and_merging(tmp_path):
    path = tmp_path / "concepts.txt"
    path.write_text("# my concepts\nbird\n\n  red   car \nBird\nflower\n")
    assert concepts_from_file(path) == ["bird", "red car", "flower"]
    assert merge_concepts(["animals", "food"], ["Food", "car"]) == ["animals", "food", "car"]
    with pytest.raises(ConfigError, match="concept file not found"):
        concepts_from_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="names no concept"):
        concepts_from_file(tmp_path / "empty.txt")


# ---- balance, duplicates, assignment -------------------------------------------------------------------------------
def test_quotas_fill_evenly_and_respect_small_concepts():
    rng = np.random.default_rng(0)
    assert quotas(np.array([1, 10, 10]), 11, rng).tolist() == [1, 5, 5]
    q = quotas(np.array([3, 50, 50, 0]), 40, rng)
    assert q.sum() == 40 and q[0] == 3 and q[3] == 0 and abs(q[1] - q[2]) <= 1
    assert quotas(np.array([2, 3]), 100, rng).tolist() == [2, 3]  # budget beyond the pool: everything


def test_balanced_sample_is_seeded_and_skips_ineligible():
    assignment = np.array([0] * 50 + [1] * 5 + [2] * 20 + [-1] * 10)
    eligible = np.ones(len(assignment), dtype=bool)
    eligible[50:52] = False  # two of concept 1 are duplicates
    chosen = balanced_sample(assignment, eligible, 3, budget=21, seed=1)
    counts = np.bincount(assignment[chosen], minlength=3)
    assert counts.tolist() == [9, 3, 9] and eligible[chosen].all() and (assignment[chosen] >= 0).all()
    assert np.array_equal(chosen, balanced_sample(assignment, eligible, 3, budget=21, seed=1))
    assert not np.array_equal(chosen, balanced_sample(assignment, eligible, 3, budget=21, seed=2))
    assert concept_balance(counts) > 0.9 and concept_balance(np.array([30, 0, 0])) == 0.0


def test_near_duplicates_flag_later_copies_only():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 16))
    x[30] = x[4]  # an exact copy: cosine 1
    x[41] = x[7] + 0.05 * rng.normal(size=16)  # a near copy: cosine about 0.999
    dup = near_duplicates(x, 0.95)
    assert np.flatnonzero(dup).tolist() == [30, 41]  # the later item of each pair, never the original
    assert np.array_equal(dup, near_duplicates(x, 0.95, block=3))
    assert np.flatnonzero(near_duplicates(x, 0.9999)).tolist() == [30]


def test_an_image_vote_can_change_the_assignment():
    caption = np.array([[0.50, 0.45, 0.10], [0.2, 0.3, 0.6]])
    image = np.array([[0.10, 0.40, 0.10], [0.1, 0.1, 0.5]])
    assert assign_concepts(caption).tolist() == [0, 2]
    assert assign_concepts(caption, image, image_weight=0.5).tolist() == [1, 2]
    assert assign_concepts(caption, image, image_weight=0.0).tolist() == [0, 2]


# ---- on real stamps ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from modalign.store import EmbeddingStore

    return EmbeddingStore(tmp_path_factory.mktemp("store"))


@pytest.fixture()
def pool(pairs_dir, tux_images):
    """The 12 stamps of pairs_dir plus an exact copy of the first image under another name and caption."""
    shutil.copy(tux_images[0], pairs_dir / "images" / "copy.png")
    with open(pairs_dir / "pairs.csv", "a") as f:
        f.write('images/copy.png,"Another picture of the same thing"\n')
    return pairs_dir


def test_curation_assigns_by_caption_drops_copies_and_balances(pool, tux_images, store, tmp_path):
    from modalign.curate.run import CurateConfig, curate, write_pairs
    from modalign.data.pairs import load_pairs

    data = load_pairs(pool / "pairs.csv")
    concepts = list(dict.fromkeys(FOLDER_CONCEPT.values()))
    result = curate(data, concepts, CurateConfig(budget=6), store, progress=False)
    folder = {p.name: p.parent.name for p in tux_images}
    assigned = {data.group_names[g]: concepts[a] for g, a in zip(result.groups, result.assignment, strict=True)}
    right = [name for name, c in assigned.items() if name.split("/")[-1] in folder
             and FOLDER_CONCEPT[folder[name.split("/")[-1]]] == c]
    assert len(right) >= 8, assigned  # most captions go to their folder's concept
    dups = [data.group_names[g] for g in result.groups[result.duplicate]]
    assert dups == ["images/copy.png"]  # the copy (a later group than its original) is the duplicate
    assert len(result.chosen) == 6 and "images/copy.png" not in [data.group_names[g] for g in result.chosen_groups]
    cov = {r["concept"]: r for r in result.coverage()}
    assert sum(r["pool"] for r in cov.values()) == 13 and sum(r["chosen"] for r in cov.values()) == 6
    assert max(r["chosen"] for r in cov.values()) - min(r["chosen"] for r in cov.values() if r["pool"] > 1) <= 1
    path = write_pairs(data, result, tmp_path / "curated.csv")
    back = load_pairs(path)
    assert back.n_groups == 6 and all(p.is_file() for p in back.column("image").items)
    assert set(back.column("text").items) <= set(data.column("text").items)


def test_curate_cli_end_to_end(pool, tmp_path, store, capsys):
    from modalign.cli.main import main

    concepts = tmp_path / "concepts.txt"
    concepts.write_text("bird\nfruit\ncar\n")
    out = tmp_path / "cur"
    rc = main(["curate", "--pairs", str(pool / "pairs.csv"), "--budget", "4", "--concepts", str(concepts),
               "--concepts", "mine", "--min-count", "2", "--format", "jsonl", "--out", str(out),
               "--store", str(store.root), "-q"])
    assert rc == 0
    report = json.loads((out / "coverage.json").read_text())
    assert report["summary"]["n_chosen"] == 4 and report["summary"]["n_pool"] == 13
    assert [r["concept"] for r in report["coverage"]][:3] == ["bird", "fruit", "car"]
    lines = [json.loads(line) for line in (out / "curated.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and {"image", "caption", "concept", "similarity", "group"} <= set(lines[0])
    assert (out / "coverage.png").read_bytes()[:4] == b"\x89PNG"
    assert "chose 4 of 13 pairs" in capsys.readouterr().out


def test_curation_refuses_a_bad_budget_or_no_concepts(pool, store):
    from modalign.curate.run import CurateConfig, curate
    from modalign.data.pairs import load_pairs

    data = load_pairs(pool / "pairs.csv")
    with pytest.raises(ConfigError, match="budget must be at least 1"):
        curate(data, ["bird"], CurateConfig(budget=0), store)
    with pytest.raises(ConfigError, match="no concepts"):
        curate(data, [], CurateConfig(budget=3), store)


def test_an_aligned_model_votes_with_the_images(pool, store):
    import torch

    from modalign.align.projectors import ProjectorConfig
    from modalign.curate.run import CurateConfig, curate
    from modalign.data.pairs import load_pairs
    from modalign.encoders import create_encoder
    from modalign.model import AlignedModel, TowerConfig

    encoders = {"image": create_encoder("effnet-lite0"), "text": create_encoder("minilm-l6")}
    torch.manual_seed(0)
    proj = ProjectorConfig(type="linear", out_dim=16, standardize=False)
    model = AlignedModel({m: TowerConfig(m, e.spec, "final", e.dim, e.fingerprint(), proj)
                          for m, e in encoders.items()})
    for m, e in encoders.items():
        model.set_encoder(m, e)
    data = load_pairs(pool / "pairs.csv")
    concepts = ["bird", "fruit", "car", "flower"]
    result = curate(data, concepts, CurateConfig(budget=4, image_weight=1.0, dedup_threshold=None), store,
                    model=model, progress=False)
    # with all the weight on the image vote, each group's concept is its image's nearest prompt in the model
    images = [data.column("image").items[r] for r in np.argsort(data.column("image").groups)]
    expected = (model.encode_image(images) @ model.encode_text([f"a photo of a {c}." for c in concepts]).T).argmax(1)
    assert result.assignment.tolist() == expected.tolist()
    captions_only = curate(data, concepts, CurateConfig(budget=4, dedup_threshold=None), store, progress=False)
    assert captions_only.assignment.tolist() != expected.tolist()  # so the vote above did change something


# ---- labels and unreadable images -----------------------------------------------------------------------------------
@pytest.fixture()
def labelled_pool(tmp_path, tux_root):
    """A small Tux Paint tree (4 categories, 5 stamps each) and one stamp whose image is corrupt."""
    root = tmp_path / "stamps"
    for sub in ("animals/birds", "food/fruit", "vehicles/auto", "plants/flowers"):
        (root / sub).mkdir(parents=True)
        pngs = [p for p in sorted((tux_root / sub).glob("*.png")) if p.with_suffix(".txt").exists()][:5]
        for png in pngs:
            shutil.copy(png, root / sub / png.name)
            shutil.copy(png.with_suffix(".txt"), root / sub / png.with_suffix(".txt").name)
    (root / "food" / "fruit" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not an image")
    (root / "food" / "fruit" / "zz_broken.txt").write_text("A pear that cannot be drawn.\n")
    return root


def test_with_label_concepts_each_group_takes_its_own_label(labelled_pool, store):
    from modalign.curate.run import CurateConfig, curate
    from modalign.data.tuxpaint import load_tuxpaint

    data = load_tuxpaint(labelled_pool)
    concepts = list(data.classnames)  # `--concepts labels`
    truth = data.group_labels
    by_labels = curate(data, concepts, CurateConfig(budget=8, dedup_threshold=None), store, progress=False)
    readable = by_labels.assignment >= 0
    assert (by_labels.assignment[readable] == truth[by_labels.groups][readable]).all()
    by_text = curate(data, concepts, CurateConfig(budget=8, dedup_threshold=None, use_labels=False), store,
                     progress=False)
    agree = (by_text.assignment[readable] == truth[by_text.groups][readable]).mean()
    assert agree >= 0.5  # the similarity path alone (labels unused): most of 4 easy categories


def test_budget_is_never_spent_on_an_image_the_store_could_not_read(labelled_pool, store):
    from modalign.curate.run import CurateConfig, curate
    from modalign.data.tuxpaint import load_tuxpaint

    data = load_tuxpaint(labelled_pool)
    broken = data.group_names.index("food/fruit/zz_broken.png")
    for dedup in (None, 0.95):  # whether or not images are compared for near-duplicates
        result = curate(data, list(data.classnames), CurateConfig(budget=100, dedup_threshold=dedup), store,
                        progress=False)
        assert broken not in result.chosen_groups.tolist()
        assert result.assignment[result.groups.tolist().index(broken)] == -1
        assert len(result.chosen) == data.n_groups - 1 - int(result.duplicate.sum())
