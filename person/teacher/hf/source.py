"""Where a teacher's files are and what kind of model they hold, without ever reaching the network.

`resolve_model_dir` turns a local directory or a Hugging Face id into a directory: an id is looked up
in the local HF cache only (`local_files_only=True`); nothing is downloaded and nothing global
(environment, hub constants) is changed. `detect_kind` reads config.json, and `config_hash`
fingerprints the model and processor configs so a feature store can tell teachers apart.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from huggingface_hub import constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

from person.errors import PersonError

KINDS = ("siglip", "siglip2-naflex", "mexma-siglip2", "clip")
_MODEL_TYPES = {"siglip": "siglip", "siglip2": "siglip2-naflex", "clip": "clip"}
_VISION_ONLY = {"siglip_vision_model", "siglip2_vision_model", "clip_vision_model", "clip_text_model",
                "siglip_text_model", "siglip2_text_model"}
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
# Keys that change with the saving library or the path, not with the model.
_VOLATILE_KEYS = {"transformers_version", "_name_or_path", "_commit_hash"}


class TeacherNotFoundError(PersonError, FileNotFoundError):
    """The teacher is neither a local directory nor in the local Hugging Face cache."""


class TeacherFormatError(PersonError, ValueError):
    """The directory exists but does not hold a teacher this project can load."""


def _download_hint(repo_id: str, cache_dir: str | Path | None, what: str = "") -> str:
    cache = cache_dir or constants.HF_HUB_CACHE
    return (f"nothing is downloaded here: run `hf download {repo_id}{what}` (or `huggingface-cli download "
            f"{repo_id}{what}`) on a machine with internet, copy its Hugging Face cache "
            f"(~/.cache/huggingface/hub) to {cache} here, or pass a local directory that holds the model")


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~", "\\")) or text.count("/") > 1 or "\\" in text or ":" in text


def resolve_model_dir(id_or_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A local directory as is, or a hub id's snapshot directory in the local HF cache."""
    text = str(id_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise TeacherFormatError(f"teacher {text}: is a file, not a model directory; pass the directory that "
                                 f"holds config.json, the weights and the processor files")
    if isinstance(id_or_path, Path) or _looks_like_path(text):
        raise TeacherNotFoundError(f"teacher directory {text} does not exist: pass a directory holding "
                                   f"config.json, the weights and the processor files, or a Hugging Face id "
                                   f"(e.g. google/siglip2-so400m-patch16-512) cached locally")
    try:
        return Path(snapshot_download(text, cache_dir=cache_dir, local_files_only=True))
    except HFValidationError:
        raise TeacherNotFoundError(f"teacher {text!r}: not a directory and not a valid Hugging Face id; pass a "
                                   f"model directory or an id like google/siglip2-so400m-patch16-512") from None
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as e:
        raise TeacherNotFoundError(f"teacher {text!r}: not a local directory and not in the local Hugging Face "
                                   f"cache ({type(e).__name__}); {_download_hint(text, cache_dir)}") from None


def cached_hub_file(repo_id: str, filename: str, cache_dir: str | Path | None, needed_by: str) -> Path:
    """One file of another hub repo, from the local cache only (e.g. a tower config a model names by id)."""
    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        raise TeacherNotFoundError(f"{needed_by} needs {filename} of {repo_id}, which is not in the local Hugging "
                                   f"Face cache; {_download_hint(repo_id, cache_dir, ' ' + filename)}") from None


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TeacherFormatError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise TeacherFormatError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        raise TeacherFormatError(f"{model_dir}: no config.json, so not a Hugging Face model directory; a teacher "
                                 f"directory holds config.json, the weights (model.safetensors), the image "
                                 f"processor (preprocessor_config.json) and the tokenizer files")
    return read_json(path)


def is_mexma_siglip(config: dict[str, Any]) -> bool:
    """visheratin/mexma-siglip2 ships custom code: recognise it by its class name, whatever its model_type."""
    names = [str(config.get("model_type", ""))] + [str(a) for a in config.get("architectures") or []]
    names += [str(v) for v in (config.get("auto_map") or {}).values()]
    return any("mexma" in n.lower() for n in names)


def detect_kind(config: dict[str, Any], model_dir: Path) -> str:
    """One of KINDS, from config.json's model_type (or the custom-code class name for MEXMA-SigLIP2)."""
    if is_mexma_siglip(config):
        return "mexma-siglip2"
    model_type = config.get("model_type")
    if model_type in _MODEL_TYPES:
        return _MODEL_TYPES[model_type]
    if model_type in _VISION_ONLY:
        raise TeacherFormatError(f"{model_dir}: model_type {model_type!r} is a single tower; a teacher needs the "
                                 f"full image+text model (model_type siglip, siglip2 or clip)")
    raise TeacherFormatError(f"{model_dir}: model_type {model_type!r} is not a supported teacher; supported: "
                             f"siglip (SigLIP and SigLIP2 FixRes), siglip2 (SigLIP2 NaFlex), clip, and "
                             f"visheratin/mexma-siglip2")


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VOLATILE_KEYS}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def config_hash(model_dir: Path) -> str:
    """sha256 of config.json + the processor config(s), canonicalised, so copies and re-loads agree."""
    parts = {"config.json": _stable(read_config(model_dir))}
    for name in _PROCESSOR_FILES:
        if (model_dir / name).is_file():
            parts[name] = _stable(read_json(model_dir / name))
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode("ascii")).hexdigest()
