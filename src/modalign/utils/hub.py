"""Model Hub paths: "hf-hub:org/name" -> a local snapshot folder (downloaded, or from the cache offline).

Below the model so that `AlignedModel.from_pretrained("hf-hub:...")` needs no integration module;
pushing and model cards live in modalign.integrations.hub.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

from modalign.errors import NotFoundError
from modalign.utils.paths import user_path

HUB_PREFIX = "hf-hub:"
PROBE_TIMEOUT_S = 3.0  # one TCP connect to the Hub (or the proxy): instead of ~100 s of retries with no network

logger = logging.getLogger(__name__)
_unreachable: dict[str, str] = {}  # endpoint -> why it could not be reached (probed once per process)


def hf_module() -> ModuleType:
    try:
        import huggingface_hub
    except ImportError as e:
        raise ImportError("the Hugging Face Hub needs huggingface_hub: pip install 'modalign[hub]'") from e
    return huggingface_hub


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _probe_target() -> tuple[str, str, int]:
    """(endpoint, host, port) that a Hub download would connect to first: the HTTPS proxy when one is set."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy") if os.environ.get(k)),
                 None)
    url = urlsplit(proxy if proxy and "://" in proxy else f"http://{proxy}" if proxy else endpoint)
    return endpoint, url.hostname or "", url.port or (443 if url.scheme == "https" else 80)


def go_offline() -> None:
    """Hub libraries read the local cache only from now on (they read HF_HUB_OFFLINE at import time)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]


def hub_unreachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the Hub may be asked; otherwise why not: HF_HUB_OFFLINE, or no network (one quick connect,
    said once per process, after which the hub libraries are switched to their local cache)."""
    endpoint, host, port = _probe_target()
    if _unreachable.get(endpoint):  # found before (we set HF_HUB_OFFLINE then): the same reason
        return _unreachable[endpoint]
    if hub_offline():
        return "HF_HUB_OFFLINE is set"
    if endpoint not in _unreachable:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            _unreachable[endpoint] = ""
        except OSError as e:  # no DNS, refused, timed out
            _unreachable[endpoint] = f"no network: {host}:{port} cannot be reached ({e})"
            logger.warning("the Hugging Face Hub cannot be reached (%s): using the local cache only; set "
                           "HF_HUB_OFFLINE=1 to skip this check", _unreachable[endpoint])
    if _unreachable[endpoint]:
        go_offline()
    return _unreachable[endpoint] or None


def resolve(spec: str | Path, cache_dir: str | Path | None = None, local_dir: str | Path | None = None,
            revision: str | None = None, token: str | None = None, offline: bool | None = None) -> Path:
    """"hf-hub:org/name" -> a local folder (downloaded or from the cache); any other spec is a local path."""
    spec = str(spec)
    if not spec.startswith(HUB_PREFIX):
        return user_path(spec)
    repo_id = spec[len(HUB_PREFIX):]
    if local_dir is not None:
        return user_path(local_dir)
    hf = hf_module()
    offline = hub_unreachable() is not None if offline is None else offline
    try:
        return Path(hf.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                         local_files_only=offline))
    except Exception as e:  # LocalEntryNotFoundError, RepositoryNotFoundError, network errors
        where = f"the local cache {cache_dir or '(default)'}" if offline else "the Hub"
        raise NotFoundError(f"could not get {repo_id!r} from {where}: {e}. Check the repo id, log in for a "
                                "private repo, or pass local_dir= a folder in hub layout") from e
