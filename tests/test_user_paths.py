"""`~` means the home folder wherever a path is accepted (issue 18: the README's EmbeddingStore("~/...")
once created a folder literally named "~"): store, model save/load, run folders, index, figures, hub
folders and every path option of the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import caption_of
from modalign.align.projectors import ProjectorConfig
from modalign.cli.main import build_parser, expand_user_paths, main
from modalign.data.column import Column
from modalign.encoders import create_encoder
from modalign.model import AlignedModel, TowerConfig
from modalign.store import EmbeddingStore


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """HOME is a fresh folder and the working directory another one, where no "~" may appear."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield home
    assert not any(p.name.startswith("~") for p in work.rglob("*")), "a folder literally named ~ was created"


def test_library_entry_points_expand_the_home_folder(home, tux_images):
    from modalign.integrations.hub import save_for_hub
    from modalign.search.index import SearchIndex
    from modalign.utils.figures import new_figure, save_figure
    from modalign.utils.hub import resolve
    from modalign.workflows.classifier import adapter_dir
    from modalign.workflows.evaluate import read_run_split

    enc = create_encoder("minilm-l6")
    texts = [caption_of(p) for p in tux_images[:4]]
    store = EmbeddingStore("~/store")
    entry = store.encode(Column("text", [f"t{i}" for i in range(4)], texts, np.arange(4)), enc,
                         progress=False)["final"]
    assert store.root == home / "store" and entry.path.parent == home / "store"

    torch.manual_seed(0)
    tower = TowerConfig("text", enc.spec, "final", enc.dim, enc.fingerprint(), ProjectorConfig(out_dim=16))
    model = AlignedModel({"text": tower})
    model.set_encoder("text", enc)
    assert model.save_pretrained("~/model") == home / "model"
    again = AlignedModel.from_pretrained("~/model", encoders={"text": enc})
    x = torch.from_numpy(entry.vectors())
    torch.testing.assert_close(again.project("text", x), model.project("text", x))
    assert save_for_hub(model, "~/hub") == home / "hub" and (home / "hub" / "README.md").is_file()
    assert resolve("~/model") == home / "model"

    assert read_run_split("~/model") is None  # a model folder without a split: read from the right place
    assert adapter_dir("~/run", "probe").is_relative_to(home / "run")
    index = SearchIndex.create("~/index", "~/model", 16, "text")
    assert index.folder == home / "index" and SearchIndex.open("~/index").folder == home / "index"
    fig, _ = new_figure()
    assert save_figure(fig, "~/figs/a.png") == home / "figs" / "a.png" and (home / "figs" / "a.png").is_file()


def test_cli_path_options_expand_the_home_folder(home, pairs_dir):
    assert main(["encode", str(pairs_dir / "pairs.csv"), "--encoder", "minilm-l6", "--store", "~/cli-store",
                 "-q"]) == 0
    assert any((home / "cli-store").iterdir())
    # every Path-typed option and argument of every command, as parsed from "~/x"
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    checked = 0
    for sub in _all_parsers(commands.values()):
        for action in sub._actions:
            if action.type is Path and action.dest != "help":
                ns = expand_user_paths(argparse.Namespace(**{action.dest: action.type("~/x")}))
                assert getattr(ns, action.dest) == home / "x", (sub.prog, action.dest)
                checked += 1
    assert checked > 20
    listed = expand_user_paths(argparse.Namespace(files=[Path("~/a"), Path("b")]))
    assert listed.files == [home / "a", Path("b")]


def _all_parsers(parsers) -> list[argparse.ArgumentParser]:
    """Each parser and its nested sub-command parsers (e.g. `eval retrieval`)."""
    out = []
    for p in parsers:
        out.append(p)
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                out += _all_parsers(a.choices.values())
    return out
