"""One registry mechanism behind every register_* / create_* / list_*; tests loop over what is registered."""

from __future__ import annotations

import logging

import pytest
import torch

from modalign.align.layer_mix import LAYER_MIXES, create_tower_module
from modalign.align.losses import LOSSES, LossInputs, create_loss
from modalign.align.projectors import PROJECTORS, ProjectorConfig, create_projector
from modalign.data.registry import DATASETS
from modalign.encoders.registry import BACKENDS, NAMED
from modalign.errors import ConfigError
from modalign.select.metrics import METRICS
from modalign.utils.registry import Registry
from modalign.workflows.methods import METHODS

ALL = [PROJECTORS, LAYER_MIXES, LOSSES, METHODS, METRICS, DATASETS, NAMED, BACKENDS]


def test_registry_basics(caplog):
    reg: Registry[int] = Registry("widget")
    reg.register("b", 2, description="the second")
    reg.register("a", 1)
    assert reg.list() == ["a", "b"] and reg.list("b*") == ["b"] and reg.list("B") == ["b"]
    assert reg.descriptions() == {"a": "", "b": "the second"}
    with caplog.at_level(logging.WARNING, logger="modalign"):
        reg.register("a", 3)
    assert "widget 'a' registered twice" in caplog.text and reg.get("a") == 3
    with pytest.raises(ConfigError, match="unknown widget 'c'; known: a, b"):
        reg.get("c")
    reg.remove("a")
    assert "a" not in reg and len(reg) == 1


@pytest.mark.parametrize("registry", ALL, ids=lambda r: r.kind)
def test_every_registry_lists_and_refuses_unknown_names(registry):
    names = registry.list()
    assert names == sorted(names) and len(names) >= 2
    with pytest.raises(ConfigError, match=f"unknown {registry.kind} 'no-such-thing'; known: "):
        registry.get("no-such-thing")


@pytest.mark.parametrize("name", PROJECTORS.list())
def test_every_projector_maps_and_back_propagates(name):
    x = torch.randn(6, 24)
    proj = create_projector(24, ProjectorConfig(type=name, out_dim=24 if name == "identity" else 8, hidden_dim=16))
    y = proj(x)
    assert y.shape == (6, 24 if name == "identity" else 8) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", LAYER_MIXES.list())
def test_every_layer_mix_reads_stacked_layers(name):
    module = create_tower_module(["a", "b"], 2 * 12, name, ProjectorConfig(type="linear", out_dim=8))
    assert module(torch.randn(5, 24)).shape == (5, 8)


@pytest.mark.parametrize("name", LOSSES.list())
def test_every_loss_is_lower_on_matched_pairs(name):
    torch.manual_seed(0)
    n, d = 16, 12
    # sparse non-negative codes: matched items agree strongly on every product the losses score (Symile's
    # three-way product included), mismatched ones barely overlap
    base = torch.nn.functional.normalize(torch.relu(torch.randn(n, d)) ** 3, dim=-1)
    emb = {"image": base, "text": base + 0.01 * torch.randn(n, d), "audio": base + 0.01 * torch.randn(n, d)}
    groups = {m: torch.arange(n) for m in emb}
    shuffled = {**emb, "text": emb["text"][torch.randperm(n)]}
    loss = create_loss(name)
    scale = torch.tensor(2.0)
    matched = loss(LossInputs(emb, emb, groups), scale)
    mismatched = loss(LossInputs(shuffled, shuffled, groups), scale)
    assert torch.isfinite(matched) and matched < mismatched
