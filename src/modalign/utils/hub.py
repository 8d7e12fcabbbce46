"""Model Hub paths: "hf-hub:org/name" -> a local snapshot folder (downloaded, or from the cache offline).

Below the model so that `AlignedModel.from_pretrained("hf-hub:...")` needs no integration module;
pushing and model cards live in modalign.integrations.hub.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from modalign.errors import NotFoundError
from modalign.utils.paths import user_path

HUB_PREFIX = "hf-hub:"


def hf_module() -> ModuleType:
    try:
        import huggingface_hub
    except ImportError as e:
        raise ImportError("the Hugging Face Hub needs huggingface_hub: pip install 'modalign[hub]'") from e
    return huggingface_hub


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


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
    offline = hub_offline() if offline is None else offline
    try:
        return Path(hf.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                         local_files_only=offline))
    except Exception as e:  # LocalEntryNotFoundError, RepositoryNotFoundError, network errors
        where = f"the local cache {cache_dir or '(default)'}" if offline else "the Hub"
        raise NotFoundError(f"could not get {repo_id!r} from {where}: {e}. Check the repo id, log in for a "
                                "private repo, or pass local_dir= a folder in hub layout") from e
