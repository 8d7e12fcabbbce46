"""The Hugging Face Hub: push a saved AlignedModel with a model card, load one by "hf-hub:org/name".

    from modalign.integrations.hub import push_to_hub, from_pretrained
    push_to_hub(model, "org/tux-effnet-minilm")                  # needs a token (huggingface-cli login)
    model = from_pretrained("hf-hub:org/tux-effnet-minilm")      # snapshot_download + AlignedModel.from_pretrained
    model = from_pretrained("runs/tux")                          # a local folder works too

Offline (HF_HUB_OFFLINE=1 or offline=True) the repo is read from the local cache only (huggingface_hub's
layout under `cache_dir`); `local_dir` points at a plain folder in hub layout instead. The repo holds
config.json + model.safetensors (AlignedModel.save_pretrained) and a generated README.md.
Needs the `hub` extra (huggingface_hub).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from modalign.model import AlignedModel
from modalign.utils.hub import HUB_PREFIX, hf_module, resolve
from modalign.utils.paths import user_path

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"


def model_card(model: AlignedModel, repo_id: str | None = None) -> str:
    """A README.md for the model: encoders and layers, training data, metrics (from model.metadata), usage."""
    meta = dict(model.metadata)
    name = repo_id or meta.get("name") or "modalign model"
    load = f'from_pretrained("{HUB_PREFIX}{repo_id}")' if repo_id else 'from_pretrained("path/to/folder")'
    lines = ["---", "library_name: modalign", "tags:", "- modalign", "- multimodal", "- feature-extraction"]
    if meta.get("dataset"):
        lines.append(f"datasets:\n- {meta['dataset']}")
    lines += ["---", "", f"# {name}", "",
              "Frozen unimodal encoders aligned into one CLIP-like embedding space by small trained projectors "
              f"([modalign](https://pypi.org/project/modalign/)). Embedding width: {model.embed_dim}.", "",
              "## Towers", "", "| modality | encoder | layer | input dim | projector |", "|---|---|---|---|---|"]
    for m, t in model.towers.items():
        lines.append(f"| {m} | `{t.encoder}` | `{t.layer}` | {t.input_dim} | {t.projector.type} "
                     f"(out {t.projector.out_dim}) |")
    lines += ["", "## Training data", ""]
    data = {k: meta[k] for k in ("dataset", "n_groups", "split_seed", "method") if k in meta}
    lines.append("\n".join(f"- {k}: {json.dumps(v)}" for k, v in data.items()) or "- not recorded")
    metrics = meta.get("test_metrics") or meta.get("best_metrics") or {}
    lines += ["", "## Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    else:
        lines.append("not recorded")
    lines += ["", "## How to use", "", "```python", "from modalign.integrations.hub import from_pretrained", "",
              f"model = {load}", 'img = model.encode_image(["cat.png"])         # (N, D), L2-normalised',
              'txt = model.encode_text(["a cat", "a car"])', "model.similarity(img, txt)", "```", ""]
    return "\n".join(lines)


def save_for_hub(model: AlignedModel, directory: str | Path, repo_id: str | None = None) -> Path:
    """The repo's content in a local folder: save_pretrained + README.md model card."""
    directory = model.save_pretrained(directory)
    (directory / CARD_NAME).write_text(model_card(model, repo_id))
    return directory


def push_to_hub(model: AlignedModel, repo_id: str, token: str | None = None, private: bool = False,
                revision: str | None = None, commit_message: str = "Upload modalign model") -> str:
    """Creates `repo_id` (if needed) and uploads the model folder with its card; returns the commit URL."""
    hf = hf_module()
    api = hf.HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory(prefix="modalign-hub-") as tmp:
        save_for_hub(model, tmp, repo_id)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, commit_message=commit_message)
    logger.info("pushed %s", info)
    return str(info)





def from_pretrained(spec: str | Path, cache_dir: str | Path | None = None, local_dir: str | Path | None = None,
                    revision: str | None = None, token: str | None = None, offline: bool | None = None,
                    **kwargs: Any) -> AlignedModel:
    """AlignedModel.from_pretrained of a local folder or an "hf-hub:org/name" repo (kwargs: encoders, device ...)."""
    return AlignedModel.from_pretrained(resolve(spec, cache_dir, local_dir, revision, token, offline), **kwargs)


def write_to_cache(folder: str | Path, repo_id: str, cache_dir: str | Path, commit: str = "0" * 40,
                   revision: str = "main") -> Path:
    """Copies a folder into huggingface_hub's cache layout (models--org--name/snapshots/<commit>), so an
    offline machine can load it as "hf-hub:org/name" (a mirror, or a test without the network)."""
    import shutil

    root = user_path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snap = root / "snapshots" / commit
    if snap.exists():
        shutil.rmtree(snap)
    shutil.copytree(folder, snap)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / revision).write_text(commit)
    return snap
