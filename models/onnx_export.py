"""Export a sentence-transformers encoder to ONNX (fp32) and a dynamic int8 variant, for CPU serving.

One folder holds everything `models.onnx_encoder.OnnxEncoder` needs, and nothing of torch:

    <folder>/model.onnx        fp32 graph (torch.onnx.export, TorchScript exporter)
    <folder>/model.int8.onnx   the same graph, MatMul weights quantised to int8 per channel
                               (onnxruntime.quantization.quantize_dynamic)
    <folder>/tokenizer.json    the model's fast tokenizer (+ its config files)
    <folder>/onnx.json         the manifest (models/onnx_files.py), written last: a folder without it is
                               an unfinished export

The graph takes `input_ids`, `attention_mask` (and `token_type_ids` when the model has them) and
returns what `models.encoder.Encoder.encode` returns, so every head reads the same features:
- `sentence_embedding` (batch, dim): the model's own modules after the transformer (its Pooling,
  Normalize, Dense ...) are traced into the graph, so pooling and normalisation are the model's;
- `layers` (batch, n_layers + 1, hidden): the attention-mask mean of every hidden state
  (0 = word embeddings), as Encoder computes it for the sentiment head;
- `token_states` (batch, sequence, hidden), only when exported with `token_states_layer=k`: hidden
  state k's token states, which the fine-tuned sentiment model's tail graph continues from when its
  lower layers are the encoder's (models/sentiment_onnx.py; the manifest's `token_states` records k and
  the digests that decide it: `prefix_digest`, `tokenizer_digest`).

The graph is traced with transformers' **eager** attention (`eager_attention`), whatever the loaded
model uses: its SDPA path traces into masking code (IsNaN, Where, extra Shape/Gather/Concat ops) that
onnxruntime cannot fuse, and the int8 graph ran 7-10 % slower for it on 2 cores (docs/benchmarks.md).
The two compute the same attention; the measured cosines below check it. The manifest records the
implementation traced (`attention`); builds reuse only exports that record it (training/export.py).

Only MatMuls are quantised (per channel, int8 weights, dynamic uint8 activations): quantising every
op costs ~0.04 of cosine to torch on MiniLM (docs/benchmarks.md). The manifest records the cosine of
each variant to torch on a fixed probe set (`probe_sentences()`), measured at export.

Usage: python -m models.onnx_export SOURCE FOLDER   (SOURCE: builtin:all-MiniLM-L6-v2 or a folder)
(its command line: bot/commands/onnx_export.py)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import warnings
from pathlib import Path

import numpy as np

from core.errors import UserError
from models.loading import inner_model, layer_layout, load_sentence_transformer, resolve_model_path
# The folder's file names and manifest live in models/onnx_files.py (OnnxEncoder reads them from there);
# training/export.py and the benchmarks import them through this module too.
from models.onnx_files import (  # noqa: F401
    FORMAT,
    MANIFEST,
    OUTPUT_NAMES,
    STATES_NAME,
    VARIANT_FILES,
    read_manifest,
    sha256_file,
    write_manifest,
)

DEFAULT_OPSET = 17
QUANTISATION = {"method": "quantize_dynamic", "per_channel": True, "op_types": ["MatMul"],
                "weight_type": "QInt8", "activation_type": "QUInt8 (dynamic)"}
OFFTOPIC = Path(__file__).resolve().parent / "assets" / "offtopic_questions.txt"
# Support-style sentences (KB titles, customer messages, odd inputs) next to the off-topic
# questions, so the probe covers what the bot reads: short, long (past max_seq_length), padded.
KB_LIKE = [
    "How do I reset my password?",
    "I was charged twice for the same order, please refund one of them.",
    "Where is my parcel? The tracking page has said 'in transit' for nine days.",
    "Can I change the delivery address after the order has shipped?",
    "My card was declined at the checkout even though I have enough money on it.",
    "The router arrived yesterday.",
    "This is the third time I'm writing and nobody answers, I'm furious!!!",
    "thanks, that fixed it :)",
    "Refunds are paid back to the original payment method within 5 to 10 working days.",
    "To cancel a subscription open Settings > Billing and choose Cancel plan.",
    "  leading and trailing spaces  ",
    "ok",
    "?",
    "Wie kann ich mein Passwort ändern?",
    "export CSV of invoices 2024-Q3 #4411 (EUR)",
    " ".join(["The app crashes when I upload a photo larger than ten megabytes from the gallery."] * 30),
]


def probe_sentences() -> list[str]:
    """The fixed probe set: the shipped off-topic questions (145) plus KB-like sentences (16)."""
    lines = [line.strip() for line in OFFTOPIC.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")] + KB_LIKE


def _source_identity(name: str, path: str) -> dict:
    """Name, resolved folder and a hash of the weights, so a version can tell which encoder this is."""
    folder = Path(path)
    weights = next((folder / f for f in ("model.safetensors", "pytorch_model.bin") if (folder / f).is_file()), None)
    return {"name": name, "path": str(folder), "weights": weights.name if weights else None,
            "weights_sha256": sha256_file(weights) if weights else None}


def prefix_digest(bert, layers: int) -> str:
    """sha256 of a transformers encoder's embeddings and its first `layers` transformer layers (parameter
    names and float32 values; the layers found by structure, `layer_layout`, so DistilBERT-like models
    too): two models with the same digest compute the same hidden state `layers`."""
    import torch

    digest = hashlib.sha256()
    wanted = layer_layout(bert).lower(layers)
    found = 0
    for name, value in sorted(bert.named_parameters()):
        if name.startswith(wanted):
            found += 1
            digest.update(name.encode())
            digest.update(value.detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
    if not found:
        raise UserError("cannot fingerprint the encoder's lower layers: it has no BERT-style parameter names")
    return digest.hexdigest()


def tokenizer_digest(path: str | Path) -> str:
    """sha256 of a tokenizer.json's tokenizer without its truncation and padding settings (those differ
    between exports of the same vocabulary: max lengths are applied at run time)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()


def reads_lower_case(path: str | Path, python_lower: bool) -> bool:
    """Whether an export reads text lower-cased: its own `do_lower_case` flag (lower() before the
    tokenizer) or a tokenizer whose normaliser lower-cases (BERT's uncased vocabularies)."""
    from tokenizers import Tokenizer

    if python_lower:
        return True
    tokenizer = Tokenizer.from_file(str(path))
    probe = "Hello World ABC"
    return tokenizer.encode(probe).ids == tokenizer.encode(probe.lower()).ids


@contextlib.contextmanager
def eager_attention(model):
    """Run the block with a transformers model on its eager attention (module doc), then put back the
    implementation it had: the model may be the process's cached copy that torch serving also uses. A
    model that cannot switch (no `set_attn_implementation`, or transformers refuses) is traced as it is.
    Yields the implementation in use (recorded in the manifests as `attention`)."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    switch = before not in (None, "eager") and hasattr(model, "set_attn_implementation")
    if switch:
        try:
            model.set_attn_implementation("eager")
        except (ValueError, ImportError, AttributeError):
            switch = False
    try:
        yield str(getattr(config, "_attn_implementation", None) or "unknown")
    finally:
        if switch:
            model.set_attn_implementation(before)


def _graph(model, input_names, token_states_layer: int | None = None):
    """What is traced: the whole sentence-transformers module chain plus the per-layer mean pool (and
    hidden state `token_states_layer`'s token states, when given)."""
    import torch

    class Graph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.st = model

        def forward(self, *tensors):
            features = dict(zip(input_names, tensors))  # keyword features: positional ones break BERT
            out = self.st(features)
            mask = features["attention_mask"].unsqueeze(-1).to(out["sentence_embedding"].dtype)
            stacked = torch.stack(tuple(out["all_layer_embeddings"]), dim=1)  # (b, L+1, t, h)
            pooled = (stacked * mask.unsqueeze(1)).sum(2) / mask.sum(1).clamp(min=1e-9).unsqueeze(1)
            if token_states_layer is not None:
                return out["sentence_embedding"], pooled, out["all_layer_embeddings"][token_states_layer]
            return out["sentence_embedding"], pooled

    return Graph().eval()


def _describe(model) -> dict:
    """Pooling, normalisation and tokenisation facts of a loaded SentenceTransformer."""
    modules = [type(m).__name__ for m in model]
    if not modules or modules[0] != "Transformer":
        raise UserError(f"cannot export this encoder to ONNX: its first module is {modules[:1]}, not a Transformer")
    pooling = next((m for m in model if type(m).__name__ == "Pooling"), None)
    pooling_config = pooling.get_config_dict() if pooling is not None and hasattr(pooling, "get_config_dict") else None
    inner = inner_model(model)
    return {
        "modules": modules,
        "pooling": pooling_config,
        "normalize": "Normalize" in modules,
        "max_seq_length": int(model.max_seq_length),
        "do_lower_case": bool(getattr(model[0], "do_lower_case", False)),
        "dim": int(model.get_embedding_dimension()),
        "n_layers": int(inner.config.num_hidden_layers),
        "hidden": int(inner.config.hidden_size),
    }


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return (a * b).sum(1)


def compare(reference, candidate) -> dict:
    """Agreement of two `Encoded` results on the same texts: embedding cosine and layer features."""
    emb = _cosines(reference.embeddings, candidate.embeddings)
    ref_layers = reference.layers.reshape(-1, reference.layers.shape[-1])
    cand_layers = candidate.layers.reshape(-1, candidate.layers.shape[-1])
    layer_cos = _cosines(ref_layers, cand_layers)
    return {
        "cosine_min": round(float(emb.min()), 6),
        "cosine_p5": round(float(np.percentile(emb, 5)), 6),
        "cosine_mean": round(float(emb.mean()), 6),
        "layers_cosine_min": round(float(layer_cos.min()), 6),
        "layers_max_abs_diff": round(float(np.abs(reference.layers - candidate.layers).max()), 6),
    }


def export_onnx(source: str, folder: str | Path, *, variants: tuple[str, ...] = ("fp32", "int8"),
                opset: int = DEFAULT_OPSET, measure: bool = True, token_states_layer: int | None = None) -> dict:
    """Export `source` (a model name as models/loading.py takes it) into `folder`; return the manifest.

    `variants` must include "fp32" (int8 is quantised from it). With `measure`, each variant is
    compared with the torch Encoder on `probe_sentences()` and the figures go into the manifest.
    `token_states_layer` (1 .. n_layers - 1): also output that hidden state's token states (module doc).
    """
    unknown = sorted(set(variants) - set(VARIANT_FILES))
    if unknown or "fp32" not in variants:
        raise UserError(f"ONNX variants must include fp32 and be among {sorted(VARIANT_FILES)}; got {list(variants)}")
    folder = Path(folder).expanduser()
    started = time.perf_counter()
    model = load_sentence_transformer(source, "cpu")  # a bad source fails before anything is written
    description = _describe(model)
    if token_states_layer is not None and not 1 <= int(token_states_layer) < description["n_layers"]:
        raise UserError(f"token_states_layer must be in 1..{description['n_layers'] - 1}; got {token_states_layer}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)  # an interrupted re-export must not look finished
    inner = inner_model(model)
    inner.config.output_hidden_states = True  # as models.encoder.Encoder sets it
    tokenizer = _save_tokenizer(model, source, folder)
    input_names, output_names, attention = _export_fp32(model, inner, folder, opset, token_states_layer)

    files = {"fp32": folder / VARIANT_FILES["fp32"]}
    if "int8" in variants:
        files["int8"] = folder / VARIANT_FILES["int8"]
        quantize_matmuls(files["fp32"], files["int8"])

    manifest = _manifest(source, description, tokenizer, input_names, output_names, opset, attention)
    if token_states_layer is not None:
        manifest["token_states"] = {"layer": int(token_states_layer),
                                    "prefix_sha256": prefix_digest(inner, int(token_states_layer)),
                                    "tokenizer_sha256": tokenizer_digest(folder / "tokenizer.json"),
                                    "lower_case": reads_lower_case(folder / "tokenizer.json", description["do_lower_case"])}
    for variant, path in files.items():
        entry = {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
        if variant == "int8":
            entry["quantisation"] = QUANTISATION
        manifest["variants"][variant] = entry

    if measure:
        _measure(manifest, source, folder, list(files))
    manifest["export_seconds"] = round(time.perf_counter() - started, 2)

    write_manifest(folder / MANIFEST, manifest)
    return manifest


def _save_tokenizer(model, source: str, folder: Path):
    """Save the model's fast tokenizer (tokenizer.json, which OnnxEncoder reads) into `folder`."""
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"cannot export {source!r} to ONNX: its tokenizer has no fast (tokenizers) version")
    tokenizer.save_pretrained(str(folder))
    if not (folder / "tokenizer.json").is_file():
        raise UserError(f"cannot export {source!r} to ONNX: saving its tokenizer wrote no tokenizer.json")
    return tokenizer


def _export_fp32(model, inner, folder: Path, opset: int, token_states_layer: int | None) -> tuple[list, list, str]:
    """Trace the graph (`_graph`) into the fp32 file; returns its input and output names and the
    attention implementation traced."""
    import torch

    sample = model.preprocess(["an example sentence to trace", "short"])
    input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    graph = _graph(model, input_names, token_states_layer)
    output_names = list(OUTPUT_NAMES) + ([STATES_NAME] if token_states_layer is not None else [])
    dynamic_axes = {n: {0: "batch", 1: "sequence"} for n in input_names}
    dynamic_axes.update({n: {0: "batch"} for n in OUTPUT_NAMES})
    dynamic_axes[STATES_NAME] = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.inference_mode(), eager_attention(inner) as attention:
        warnings.simplefilter("ignore")  # TracerWarnings from transformers' mask code; checked by measure
        torch.onnx.export(graph, tuple(sample[n] for n in input_names), str(folder / VARIANT_FILES["fp32"]),
                          input_names=input_names, output_names=output_names,
                          dynamic_axes={n: dynamic_axes[n] for n in input_names + output_names},
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    return input_names, output_names, attention


def _manifest(source: str, description: dict, tokenizer, input_names: list, output_names: list, opset: int,
              attention: str) -> dict:
    """The manifest's fixed part: the source, the model's facts and what exported it (variants to fill)."""
    import onnxruntime
    import torch

    return {
        "format": FORMAT,
        "source": _source_identity(source, resolve_model_path(source)),
        **description,
        "inputs": input_names,
        "outputs": output_names,
        "pad_token": tokenizer.pad_token,
        "pad_token_id": int(tokenizer.pad_token_id),
        "opset": opset,
        "exporter": f"torch.onnx.export (TorchScript) torch {torch.__version__}",
        "attention": attention,
        "onnxruntime": onnxruntime.__version__,
        "variants": {},
    }


def _measure(manifest: dict, source: str, folder: Path, variants: list[str]) -> None:
    """Each variant's agreement with the torch Encoder on the probe set, into the manifest."""
    from models.encoder import Encoder
    from models.onnx_encoder import OnnxEncoder

    probe = probe_sentences()
    reference = Encoder(source, "cpu").encode(probe)
    manifest["probe"] = {"sentences": len(probe), "sha256": hashlib.sha256("\n".join(probe).encode()).hexdigest()}
    for variant in variants:
        candidate = OnnxEncoder(folder, variant, manifest=manifest).encode(probe)
        manifest["variants"][variant]["vs_torch"] = compare(reference, candidate)


def quantize_matmuls(fp32_path: Path, int8_path: Path) -> None:
    """The int8 variant (QUANTISATION): onnxruntime's dynamic quantiser on the MatMuls, per channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # the quantiser logs "consider pre-processing" on root
    try:
        quantize_dynamic(str(fp32_path), str(int8_path), per_channel=True,
                         op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


if __name__ == "__main__":
    # The command line lives in bot/commands/onnx_export.py; this module stays where the docs run it
    # (`python -m models.onnx_export`). Its one import of the app (exempted in
    # tests/test_architecture.py), made only when run.
    from bot.commands.onnx_export import script_main

    raise SystemExit(script_main())
