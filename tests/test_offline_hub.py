"""A hub id offline fails fast and says why once (no minutes of download retries)."""

from __future__ import annotations

import logging
import socket

import pytest

from modalign.encoders import create_encoder
from modalign.errors import ConfigError
from modalign.utils import hub

BOGUS = "bogus-org/no-such-model-xyz"


@pytest.fixture()
def no_sockets(monkeypatch):
    """Records every name lookup; none may happen when HF_HUB_OFFLINE is set."""
    calls = []

    def lookup(*args, **kwargs):
        calls.append(args)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    return calls


@pytest.mark.parametrize("spec", [f"st:{BOGUS}", f"hf:{BOGUS}", f"timm:hf-hub:{BOGUS}"])
def test_a_bogus_hub_id_under_hf_hub_offline_fails_at_once(spec, monkeypatch, no_sockets):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_unreachable", {})
    with pytest.raises(ConfigError) as e:
        create_encoder(spec)
    said = str(e.value)
    assert "not in the local Hugging Face cache" in said and "HF_HUB_OFFLINE is set" in said
    assert "local model folder" in said and no_sockets == []  # the network was never tried


def test_no_network_is_found_with_one_probe_said_once_and_hub_libraries_go_offline(monkeypatch, no_sockets, caplog):
    import huggingface_hub.constants as constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_unreachable", {})
    with caplog.at_level(logging.WARNING, logger="modalign.utils.hub"):
        for _ in range(2):
            with pytest.raises(ConfigError, match="not in the local Hugging Face cache.*no network"):
                create_encoder(f"hf:{BOGUS}")
    assert len(no_sockets) == 1  # one probe, no retries; the second encoder reuses its answer
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "cannot be reached" in caplog.records[0].message and constants.HF_HUB_OFFLINE is True
    with pytest.raises(Exception, match="could not get"):
        hub.resolve(f"hf-hub:{BOGUS}")  # a hub model id: the same answer, from the cache only


def test_local_and_packaged_encoders_never_probe(no_sockets, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_unreachable", {})
    assert create_encoder("minilm-l6").modality == "text" and no_sockets == []
    with pytest.raises(ConfigError, match="not found"):
        create_encoder("st:/no/such/folder")
    assert no_sockets == []


def test_the_cli_says_it_once(monkeypatch, capsys):
    from modalign.cli.main import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_unreachable", {})
    assert main(["encoders", "--show", f"st:{BOGUS}"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("not in the local Hugging Face cache") == 1 and "Traceback" not in err
