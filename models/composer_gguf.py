"""A retrained composer's LoRA adapter in llama.cpp's GGUF adapter format, so the fast CPU backend
serves it on top of the quantised base model (the transformers backend runs it at a fifth of the speed).

The conversion is llama.cpp's own `convert_lora_to_gguf.py`, which is not installed by any package,
reduced to the one architecture family the GGUF adapter path here supports (LLaMA: SmolLM2, Llama,
Mistral-style blocks) and written with the `gguf` package's writer and tensor-name map:
- peft's `…layers.N.self_attn.q_proj.lora_A.weight` → `blk.N.attn_q.weight.lora_a` (names from
  `gguf.get_tensor_name_map`), lora_a as (r, in), lora_b as (out, r), float32;
- q_proj and k_proj rows permuted as llama.cpp's converter permutes the base weights for its rotary
  layout (on lora_b, the output side);
- `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha` (llama.cpp scales by
  alpha / r, as peft does without rsLoRA).

`export_lora_gguf()` writes `adapter.gguf` beside the peft files and returns its path, or returns
None with the reason logged for an adapter it cannot convert (another architecture, rsLoRA, DoRA,
embedding adapters): the transformers backend then serves it, as before.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

GGUF_ADAPTER = "adapter.gguf"
LLAMA_FAMILY = {"llama", "mistral"}


class NotConvertible(ValueError):
    """The adapter cannot be written as a llama.cpp LoRA (the reason is the message)."""


def gguf_adapter(adapter_dir: str | Path | None) -> Path | None:
    """The adapter's GGUF form when one was written, else None."""
    if adapter_dir is None:
        return None
    path = Path(adapter_dir) / GGUF_ADAPTER
    return path if path.is_file() else None


def _permute(weights, n_head: int):
    """llama.cpp's converter's q/k permutation (rotary halves interleaved), on the output rows."""
    rows = weights.shape[0]
    return weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def lora_tensors(adapter_dir: str | Path, base_config: dict) -> tuple[dict, float]:
    """{gguf tensor name: float32 numpy array} and the LoRA alpha, or NotConvertible."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    adapter_dir = Path(adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    arch = base_config.get("model_type")
    if arch not in LLAMA_FAMILY:
        raise NotConvertible(f"the base model's architecture {arch!r} has no GGUF adapter path here (LLaMA-family only)")
    if config.get("use_rslora") or config.get("use_dora"):
        raise NotConvertible("rsLoRA and DoRA adapters have no GGUF form here")
    weights_file = adapter_dir / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise NotConvertible(f"no {weights_file.name} in {adapter_dir}")
    n_head = int(base_config["num_attention_heads"])
    n_kv = int(base_config.get("num_key_value_heads") or n_head)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, int(base_config["num_hidden_layers"]))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in load_file(str(weights_file)).items():
        side = "A" if ".lora_A." in key else "B" if ".lora_B." in key else None
        if side is None:
            raise NotConvertible(f"unexpected adapter tensor {key!r} (only lora_A / lora_B of linear layers convert)")
        base = key.replace("base_model.model.", "", 1).replace(f".lora_{side}.weight", "")
        pairs.setdefault(base, {})[side] = value.astype(np.float32)
    tensors = {}
    for base, ab in sorted(pairs.items()):
        name = names.get_name(base + ".weight", try_suffixes=(".weight",))
        if name is None or not name.startswith("blk.") or set(ab) != {"A", "B"}:
            raise NotConvertible(f"adapter tensor {base!r} has no llama.cpp counterpart")
        a, b = ab["A"], ab["B"]
        if base.endswith("q_proj"):
            b = _permute(b, n_head)
        elif base.endswith("k_proj"):
            b = _permute(b, n_kv)
        tensors[name + ".lora_a"] = np.ascontiguousarray(a)
        tensors[name + ".lora_b"] = np.ascontiguousarray(b)
    if not tensors:
        raise NotConvertible("the adapter has no LoRA tensors")
    return tensors, float(config["lora_alpha"])


def export_lora_gguf(adapter_dir: str | Path, base_model_dir: str | Path) -> Path | None:
    """Write `adapter_dir/adapter.gguf` from the peft adapter there (the base model's config.json
    in `base_model_dir` gives its shape); the path, or None when it cannot be converted."""
    import gguf

    adapter_dir = Path(adapter_dir)
    try:
        base_config = json.loads((Path(base_model_dir) / "config.json").read_text(encoding="utf-8"))
        tensors, alpha = lora_tensors(adapter_dir, base_config)
    except (NotConvertible, OSError, KeyError, ValueError) as exc:
        log.info("composer adapter: no GGUF form (%s); the transformers backend serves it", exc)
        return None
    out = adapter_dir / GGUF_ADAPTER
    tmp = out.with_suffix(".gguf.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out
