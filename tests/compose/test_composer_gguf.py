"""A retrained composer's adapter served by llama.cpp: the peft adapter written as a GGUF LoRA
(models/composer_gguf.py) must move llama.cpp's quantised model the way the merged adapter moves
the float32 copy in transformers, and the backend choice must follow the adapter's forms."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from core.settings import Settings

pytestmark = pytest.mark.slow

TEXT = "Refunds are issued to the original card within five working days of the return [1]."


def random_adapter(base, out, targets, *, scale: float, seed: int = 0):
    """A peft LoRA with random A and B (scaled so its effect stands well above the Q4 rounding)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets,
                                                  init_lora_weights=False))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.mul_(scale)
    peft_model.save_pretrained(str(out))
    return peft_model


def hf_logits(model, ids):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def cpp_logits(ids, lora=None):
    from llama_cpp import Llama

    from models.loading import resolve_gguf

    llm = Llama(model_path=str(resolve_gguf("builtin:SmolLM2-135M-Instruct")), lora_path=str(lora) if lora else None,
                logits_all=True, n_threads=1, n_ctx=128, verbose=False)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


@pytest.mark.parametrize("targets", [["q_proj"], ["k_proj"], "all-linear"])
def test_the_gguf_adapter_moves_llama_cpp_as_the_merged_adapter_moves_transformers(smollm2_base, tmp_path, targets):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models.composer_gguf import GGUF_ADAPTER, export_lora_gguf

    torch.set_num_threads(1)
    ids = AutoTokenizer.from_pretrained(smollm2_base)(TEXT)["input_ids"]
    base = hf_logits(AutoModelForCausalLM.from_pretrained(smollm2_base, dtype=torch.float32), ids)
    adapted = hf_logits(random_adapter(smollm2_base, tmp_path / "adapter", targets,
                                       scale=1.0 if isinstance(targets, list) else 0.5), ids)
    gguf = export_lora_gguf(tmp_path / "adapter", smollm2_base)
    assert gguf == tmp_path / "adapter" / GGUF_ADAPTER and gguf.is_file()
    cpp_base, cpp_adapted = cpp_logits(ids), cpp_logits(ids, gguf)
    hf_delta, cpp_delta = (adapted - base).ravel(), (cpp_adapted - cpp_base).ravel()
    # The adapter's effect dwarfs the Q4 model's own rounding, so the two effects must agree. q_proj and
    # k_proj only agree when their rows are permuted as llama.cpp lays out rotary heads (0.3 without).
    assert np.linalg.norm(hf_delta) > 400
    assert np.corrcoef(hf_delta, cpp_delta)[0, 1] > 0.85
    assert 0.7 < np.linalg.norm(cpp_delta) / np.linalg.norm(hf_delta) < 1.5  # alpha / r scaling as peft's


def test_adapters_without_a_gguf_form_are_left_to_transformers(smollm2_base, tmp_path, caplog):
    from models.composer_gguf import export_lora_gguf, gguf_adapter

    adapter = tmp_path / "adapter"
    random_adapter(smollm2_base, adapter, ["v_proj"], scale=0.1)
    config = json.loads((adapter / "adapter_config.json").read_text())
    other = tmp_path / "other-arch"
    other.mkdir()
    base_config = json.loads((smollm2_base / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**base_config, "model_type": "gpt2"}))
    caplog.set_level(logging.INFO, logger="models.composer_gguf")
    assert export_lora_gguf(adapter, other) is None and gguf_adapter(adapter) is None
    assert "architecture 'gpt2'" in caplog.text
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_rslora": True}))
    assert export_lora_gguf(adapter, smollm2_base) is None and "rsLoRA" in caplog.text
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    assert export_lora_gguf(adapter, smollm2_base) is not None and gguf_adapter(adapter) is not None


def test_the_backend_follows_the_adapters_forms(tmp_path, caplog):
    from models.composer import pick_backend
    from models.composer_gguf import GGUF_ADAPTER

    peft_only = tmp_path / "peft-only"
    peft_only.mkdir()
    both = tmp_path / "both"
    shutil.copytree(peft_only, both)
    (both / GGUF_ADAPTER).write_bytes(b"GGUF")
    auto = Settings.load(env={}, home=tmp_path / "home", device="cpu")
    assert pick_backend(auto) == "llama-cpp" and pick_backend(auto, both) == "llama-cpp"
    assert pick_backend(auto, peft_only) == "transformers"
    named = auto.replace(compose_backend="llama-cpp")
    assert pick_backend(named, both) == "llama-cpp"
    with caplog.at_level(logging.WARNING, logger="csbot.composer"):
        assert pick_backend(named, peft_only) == "transformers"
    assert "has no GGUF form" in caplog.text
    assert pick_backend(auto.replace(compose_backend="transformers"), both) == "transformers"
