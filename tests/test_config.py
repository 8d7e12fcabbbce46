"""One config path: defaults written once, nested defaults kept, unknown keys and wrong kinds refused."""

from __future__ import annotations

import argparse

import pytest

from modalign.errors import ConfigError
from modalign.utils.config import load_config, merge_dicts
from modalign.workflows.extend import ExtendConfig
from modalign.workflows.fit import FitConfig


def test_extend_uses_its_documented_training_defaults():
    cfg = load_config(ExtendConfig, {})
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.patience) == (200, 64, 30)
    # a partial [train] table keeps the other extend defaults (it used to fall back to 100 / 256 / 15)
    cfg = ExtendConfig.from_dict({"train": {"seed": 3}})
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.patience, cfg.train.seed) == (200, 64, 30, 3)


def test_extend_cli_flags_go_through_the_same_loader(monkeypatch, tmp_path):
    """The CLI's override table reaches the loader: --epochs changes epochs and nothing else."""
    import modalign.cli.cmd_extend as cmd
    import modalign.workflows.extend as extend

    seen = {}

    def fake_align(model, dataset, store, *, config, **kwargs):  # stops the run right after the config is built
        seen["config"] = config
        raise ConfigError("stop here")

    monkeypatch.setattr(extend, "align_new_modality", fake_align)
    monkeypatch.setattr("modalign.model.AlignedModel.from_pretrained", classmethod(lambda cls, *a, **k: None))
    monkeypatch.setattr("modalign.data.registry.load_pairs_dataset", lambda spec: None)
    args = argparse.Namespace(config=None, epochs=7, seed=None, loss=None, layer=None, device="cpu",
                              run_dir=tmp_path, pairs="x", store=str(tmp_path / "s"), modality="audio",
                              encoder="logmel", anchor=None, out=tmp_path / "o", quiet=True, json=None)
    with pytest.raises(ConfigError, match="stop here"):
        cmd.run(args)
    train = seen["config"].train
    assert (train.epochs, train.batch_size, train.patience) == (7, 64, 30)


def test_unknown_keys_and_wrong_kinds_are_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown fit.train option\(s\) \['epoch'\]; known: .*'epochs'"):
        load_config(FitConfig, {"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="fit.train.epochs must be a whole number"):
        load_config(FitConfig, {"train": {"epochs": 2.5}})
    with pytest.raises(ConfigError, match="fit.train.lr must be like"):
        load_config(FitConfig, {"train": {"lr": "fast"}})
    with pytest.raises(ConfigError, match="fit.train.learn_temperature must be true or false"):
        load_config(FitConfig, {"train": {"learn_temperature": 1}})
    with pytest.raises(ConfigError, match="fit.train must be a table"):
        load_config(FitConfig, {"train": 5})


def test_layers_of_settings_merge_field_by_field():
    recipe = {"method": "mlp", "train": {"lr": 0.01, "projector": {"type": "mlp", "depth": 3}}}
    flags = {"train": {"epochs": 4, "projector": {"out_dim": 64}}}
    cfg = load_config(FitConfig, merge_dicts(recipe, flags))
    assert (cfg.train.lr, cfg.train.epochs) == (0.01, 4)
    assert (cfg.train.projector.depth, cfg.train.projector.out_dim) == (3, 64)
    assert cfg.train.patience == FitConfig().train.patience  # untouched fields keep their one default


def test_train_cli_has_a_loss_flag(tmp_path):
    from modalign.cli.cmd_train import build_config
    from modalign.cli.main import build_parser

    args = build_parser(["train"]).parse_args(["train", "--pairs", "x.csv", "--out", str(tmp_path),
                                               "--loss", "sigmoid", "--epochs", "3", "--out-dim", "64"])
    cfg = build_config(args)
    assert (cfg.train.loss, cfg.train.epochs, cfg.train.projector.out_dim) == ("sigmoid", 3, 64)
    with pytest.raises(ConfigError, match="unknown loss 'nope'"):
        from modalign.align.losses import create_loss

        create_loss("nope")


def test_per_modality_tables_merge_and_other_tables_replace():
    cfg = load_config(FitConfig, {"encoders": {"image": "timm:vit_tiny"}, "split": {"train": 0.9, "test": 0.1}})
    assert cfg.encoders == {"image": "timm:vit_tiny", "text": "minilm-l6"}  # the text default is kept
    assert cfg.split == {"train": 0.9, "test": 0.1}  # a split given is the whole split
    assert load_config(FitConfig, {"encoders": {}}).encoders == FitConfig().encoders
