"""Small helpers the encoder backends share: spec-option conversion, pooling, model-folder hashes.

Spec options arrive as strings (`st:PATH?max_tokens=128` gives max_tokens="128"); factories called
from Python may pass real values. The `opt_*` converters accept both and raise ConfigError naming the
option and what it accepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from modalign.errors import ConfigError
from modalign.utils.hashing import hash_files, hash_json

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

# Files whose bytes change the vectors: torch weights, configs, vocabularies, sentencepiece models.
_FOLDER_HASH_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".json", ".txt", ".model"}
# Alternative exports shipped beside the torch weights in hub repos; they are never loaded here.
_FOLDER_HASH_SKIP_DIRS = {"onnx", "openvino", ".git", ".cache"}


def opt_int(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"option {name}={value!r} must be an integer") from e


def opt_float(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"option {name}={value!r} must be a number") from e


def opt_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"option {name}={value!r} must be true or false")


def opt_floats(value: Any, name: str, n: int = 3) -> tuple[float, ...] | None:
    """'0.5,0.5,0.5' (or a sequence of numbers) -> (0.5, 0.5, 0.5); a single number is repeated n times."""
    if value is None or value == "":
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        floats = tuple(float(p) for p in parts)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"option {name}={value!r} must be {n} comma-separated numbers") from e
    if len(floats) == 1:
        floats = floats * n
    if len(floats) != n:
        raise ConfigError(f"option {name}={value!r} must be {n} comma-separated numbers, got {len(floats)}")
    return floats


def opt_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise ConfigError(f"option {name}={value!r} must be one of: {', '.join(choices)}")
    return text


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real (mask == 1) tokens: (B, T, D), (B, T) -> (B, D)."""
    m = mask.to(tokens.dtype).unsqueeze(-1)  # (B, T, 1)
    return (tokens * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def pool_features(x: torch.Tensor) -> torch.Tensor:
    """Any feature map to one vector per item: (B, C, H, W) -> mean over H, W; (B, T, D) -> mean over T."""
    if x.ndim == 4:
        return x.mean(dim=(2, 3))
    if x.ndim == 3:
        return x.mean(dim=1)
    if x.ndim == 2:
        return x
    return x.flatten(1)


def is_local_path(id_or_path: str) -> bool:
    """True for something that names a file or folder on disk rather than a hub id."""
    return id_or_path.startswith(("/", "./", "../", "~", "\\")) or Path(id_or_path).expanduser().exists()


def hf_source(id_or_path: str) -> tuple[Path | None, str]:
    """(local folder or None, what to pass to from_pretrained) for a hub id or a local model folder."""
    if not is_local_path(id_or_path):
        return None, id_or_path
    local_dir = Path(id_or_path).expanduser()
    if not local_dir.is_dir():
        from modalign.errors import ConfigError

        raise ConfigError(f"Hugging Face model folder not found: {local_dir}")
    return local_dir, str(local_dir)


def model_folder_fingerprint(folder: Path) -> str:
    """Hash of a model folder's weights, configs and vocabularies (not READMEs, not onnx/ exports)."""
    files = [
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix in _FOLDER_HASH_SUFFIXES
        and not _FOLDER_HASH_SKIP_DIRS.intersection(p.relative_to(folder).parts[:-1])
    ]
    if not files:
        raise ConfigError(f"no model files (*.safetensors, *.bin, config.json ...) in {folder}")
    return hash_files(files)


def describe_tokenizer(tokenizer: Any) -> dict[str, Any]:
    """What about a Hugging Face tokenizer changes the token ids (no paths: the key must not depend on them)."""
    vocab = tokenizer.get_vocab()
    return {
        "tokenizer": type(tokenizer).__name__,
        "vocab_size": len(vocab),
        "vocab_hash": hash_json(vocab),
        "do_lower_case": getattr(tokenizer, "do_lower_case", None),
        "padding_side": getattr(tokenizer, "padding_side", None),
        "truncation_side": getattr(tokenizer, "truncation_side", None),
    }
