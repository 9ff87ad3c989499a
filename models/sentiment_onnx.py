"""The fine-tuned sentiment model (models/sentiment_model.py) through onnxruntime on CPU, fp32 and int8.

`export_sentiment(artefact, folder)` writes one folder that `OnnxSentiment` serves without torch:

    <folder>/sentiment.onnx         fp32 graph of the merged model (torch.onnx.export, TorchScript
                                    exporter, eager attention as models/onnx_export.py traces it):
                                    input_ids, attention_mask, token_type_ids -> logits
    <folder>/sentiment.int8.onnx    the same graph, MatMul weights quantised to int8 per channel
                                    (onnxruntime.quantization.quantize_dynamic, as the encoder's)
    <folder>/sentiment_tail.onnx    (when the model leaves the base's lower k layers as they are:
    <folder>/sentiment_tail.int8.onnx  `FineTunedSentiment.shared_layers`) the layers from k up, the
                                    pooling and the head: token_states (1, tokens, hidden) -> logits
    <folder>/tokenizer.json         the base encoder's fast tokenizer (+ its config files)
    <folder>/sentiment_onnx.json    the manifest, written last: a folder without it is unfinished

**The tail.** The intent fine-tuning changes only the encoder's top layers, so the served encoder's
hidden state k is often exactly the sentiment model's. The encoder's export can then output it
(models/onnx_export.py `token_states`), and a question costs one encoder pass plus the tail (half a
pass for the shipped model) instead of two passes. Whether the two exports fit is decided by digests
both manifests record (`shares_prefix_with`: the same k, the same embeddings and lower-layer weights,
the same vocabulary and lower-casing); the build measures how often the shared path's label agrees
with the model's own pass (`compare_shared`) and records whether it serves (training/export.py). A text
longer than the model's max_length (the encoder reads up to its own, longer, limit) takes the own pass.

The pooling (masked mean of the chosen hidden states, layer norm, concatenation) and the head are
inside the graph; temperature and softmax are applied here, as `FineTunedSentiment.probabilities`
does. The manifest records the artefact's sha256 (a build reuses an export of the same artefact)
and, per variant, its agreement with the torch model on a probe set (`compare_to_torch`).

int8 runs one text at a time: dynamic quantisation scales activations per run, so in a batch a
text's label could depend on its batchmates (the same rule as models/onnx_encoder.py).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Literal

import numpy as np

from core.errors import UserError
from models.onnx_encoder import cpu_session, map_texts, one_text_workers
from models.onnx_files import load_manifest
from models.onnx_export import (
    QUANTISATION,
    eager_attention,
    prefix_digest,
    probe_sentences,
    quantize_matmuls,
    reads_lower_case,
    sha256_file,
    tokenizer_digest,
    write_manifest,
)
from models.sentiment_model import softmax_np

FORMAT = 1
MANIFEST = "sentiment_onnx.json"
VARIANT_FILES = {"fp32": "sentiment.onnx", "int8": "sentiment.int8.onnx"}
TAIL_FILES = {"fp32": "sentiment_tail.onnx", "int8": "sentiment_tail.int8.onnx"}
RUNTIME_OF_VARIANT = {"fp32": "onnx", "int8": "onnx-int8"}
DEFAULT_OPSET = 17
# Messages as watched channels carry them, next to the encoder's probe set (questions, odd inputs).
MESSAGE_PROBE = [
    "The router arrived yesterday.",
    "My order number is 12345.",
    "thank you so much, great service!",
    "this is the worst support ever",
    "I love the new app",
    "my order arrived broken and nobody answers",
    "Still waiting for a refund after three weeks. Unbelievable.",
    "ok thanks",
    "Flight delayed again, missed my connection, no one at the desk.",
    "The new dashboard looks nice but the export button is gone?",
    "@user can you check ticket 4411 please",
    "not bad at all :)",
]


def probe_texts(extra: list[str] | None = None) -> list[str]:
    """The fixed probe set (the encoder's, plus message-like lines) and `extra` texts (a KB's)."""
    return list(dict.fromkeys(probe_sentences() + MESSAGE_PROBE + [t for t in (extra or []) if t and t.strip()]))


def export_sentiment(artefact: str | Path, folder: str | Path, *, opset: int = DEFAULT_OPSET,
                     probe: list[str] | None = None) -> dict:
    """Export the artefact's merged model to `folder` (fp32 and int8); return the manifest."""
    import torch

    from models.sentiment_model import FineTunedSentiment

    started = time.perf_counter()
    artefact = Path(artefact)
    model = FineTunedSentiment.load(artefact)  # a bad artefact fails before anything is written
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)  # an interrupted re-export must not look finished
    if not getattr(model.tokenizer, "is_fast", False):
        raise UserError(f"cannot export sentiment model {artefact} to ONNX: its tokenizer has no fast version")
    model.tokenizer.save_pretrained(str(folder))
    sample = model.tokenize(["an example sentence to trace", "short"])
    input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    dynamic_axes = {n: {0: "batch", 1: "sequence"} for n in input_names}
    dynamic_axes["logits"] = {0: "batch"}
    files = {variant: folder / name for variant, name in VARIANT_FILES.items()}
    with warnings.catch_warnings(), torch.inference_mode(), eager_attention(model.torch_model().encoder) as attention:
        warnings.simplefilter("ignore")  # TracerWarnings from transformers' mask code; checked below
        torch.onnx.export(model.torch_model(), tuple(sample[n] for n in input_names), str(files["fp32"]),
                          input_names=input_names, output_names=["logits"], dynamic_axes=dynamic_axes,
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    quantize_matmuls(files["fp32"], files["int8"])
    tail = _export_tail(model, folder, opset)

    import onnxruntime

    manifest = {
        "format": FORMAT,
        "artefact": {"path": str(artefact), "sha256": sha256_file(artefact)},
        "labels": model.labels,
        "temperature": model.temperature,
        "max_length": model.max_length,
        "inputs": input_names,
        "pad_token": model.tokenizer.pad_token,
        "pad_token_id": int(model.tokenizer.pad_token_id),
        "do_lower_case": bool(getattr(model.tokenizer, "do_lower_case", False)),
        "opset": opset,
        "exporter": f"torch.onnx.export (TorchScript) torch {torch.__version__}",
        "attention": attention,
        "onnxruntime": onnxruntime.__version__,
        "variants": {variant: {**_file_entry(path), **({"quantisation": QUANTISATION} if variant == "int8" else {})}
                     for variant, path in files.items()},
    }
    if tail is not None:
        manifest["tail"] = tail
    texts = probe_texts(probe)
    reference = model.predict_proba(texts)
    manifest["probe"] = {"texts": len(texts)}
    states = _torch_states(model, texts, tail["layer"]) if tail is not None else None
    for variant in files:
        candidate = OnnxSentiment(folder, variant, manifest=manifest)
        manifest["variants"][variant]["vs_torch"] = compare_to_torch(reference, candidate.predict_proba(texts))
        if tail is not None:  # the tail fed the torch model's own hidden state k: is the graph right?
            tail["variants"][variant]["vs_torch"] = compare_to_torch(
                reference, candidate.predict_proba_shared(texts, states))
    manifest["export_seconds"] = round(time.perf_counter() - started, 2)
    write_manifest(folder / MANIFEST, manifest)
    return manifest


def _tail_module(classifier, k: int):
    """The classifier from hidden state k on: its layers k.., then its pooling and head (one text, no
    padding: every token is attended to and pooled)."""
    import torch

    class Tail(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.classifier = classifier

        def forward(self, token_states):
            states, hidden = [None] * k + [token_states], token_states
            for layer in self.classifier.encoder.encoder.layer[k:]:
                hidden = layer(hidden)
                states.append(hidden)
            mask = torch.ones_like(token_states[..., 0], dtype=torch.int64)
            return self.classifier.head_logits(self.classifier.pool_states(states, mask))

    return Tail().eval()


def _torch_states(model, texts: list[str], k: int, batch_size: int = 64) -> list[np.ndarray]:
    """Hidden state k of the torch model for each text, cut to its own tokens (padding is masked out of
    attention, so a padded batch gives each text the states it has alone)."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            tokens = model.tokenize(texts[start:start + batch_size])
            hidden = model.torch_model().encoder(**tokens, output_hidden_states=True).hidden_states[k]
            lengths = tokens["attention_mask"].sum(1).tolist()
            out.extend(hidden[row, :n].float().numpy() for row, n in enumerate(lengths))
    return out


def _export_tail(model, folder: Path, opset: int) -> dict | None:
    """Export the tail graphs (module doc) when the model has lower layers to share; their manifest record."""
    import torch

    k = model.shared_layers()
    if k is None:
        return None
    files = {variant: folder / name for variant, name in TAIL_FILES.items()}
    sample = torch.from_numpy(_torch_states(model, ["an example sentence to trace"], k)[0][None])
    with warnings.catch_warnings(), torch.inference_mode(), eager_attention(model.torch_model().encoder):
        warnings.simplefilter("ignore")
        torch.onnx.export(_tail_module(model.torch_model(), k), (sample,), str(files["fp32"]),
                          input_names=["token_states"], output_names=["logits"],
                          dynamic_axes={"token_states": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}},
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    quantize_matmuls(files["fp32"], files["int8"])
    return {"layer": k, "prefix_sha256": prefix_digest(model.torch_model().encoder, k),
            "tokenizer_sha256": tokenizer_digest(folder / "tokenizer.json"),
            "lower_case": reads_lower_case(folder / "tokenizer.json", bool(getattr(model.tokenizer, "do_lower_case", False))),
            "variants": {variant: _file_entry(path) for variant, path in files.items()}}


def shares_prefix_with(encoder_manifest: dict, sentiment_manifest: dict) -> str | None:
    """None when the sentiment export's tail can continue from the encoder export's `token_states`;
    else why not (one line)."""
    states, tail = encoder_manifest.get("token_states"), sentiment_manifest.get("tail")
    if not tail:
        return "the sentiment model has no tail graph (it adapts its lowest layers, or its head reads them)"
    if not states:
        return "the encoder's export has no token_states output"
    if states.get("layer") != tail.get("layer"):
        return f"the encoder outputs hidden state {states.get('layer')}, the tail starts from {tail.get('layer')}"
    if states.get("prefix_sha256") != tail.get("prefix_sha256"):
        return f"the encoder's embeddings or layers below {tail['layer']} differ from the sentiment model's base"
    if states.get("tokenizer_sha256") != tail.get("tokenizer_sha256") or states.get("lower_case") != tail.get("lower_case"):
        return "the encoder and the sentiment model tokenise differently"
    return None


def compare_shared(encoder, sentiment: "OnnxSentiment", texts: list[str]) -> dict:
    """How the shared path (the encoder's token states through the tail) agrees with the model's own
    pass on `texts` (compare_to_torch's figures, the own pass as the reference), and how many texts the
    shared path took (the others are longer than the model's max_length)."""
    states = encoder.encode(texts, states=True).token_states
    own = sentiment.predict_proba(texts)
    figures = compare_to_torch(own, sentiment.predict_proba_shared(texts, states))
    figures["shared_texts"] = int(sum(1 for s in states if sentiment.takes_states(s)))
    return figures


def compare_to_torch(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Agreement of two (n, labels) probability arrays on the same texts: the share of equal labels,
    the 5th percentile of the probability vectors' cosine, and the largest probability difference."""
    a = reference / np.linalg.norm(reference, axis=1, keepdims=True).clip(1e-12)
    b = candidate / np.linalg.norm(candidate, axis=1, keepdims=True).clip(1e-12)
    cosine = (a * b).sum(1)
    return {"texts": int(len(reference)),
            "label_agreement": round(float(np.mean(reference.argmax(1) == candidate.argmax(1))), 4),
            "probability_cosine_p5": round(float(np.percentile(cosine, 5)), 6),
            "max_abs_probability_diff": round(float(np.abs(reference - candidate).max()), 6)}


def _file_entry(path: Path) -> dict:
    """A graph file's manifest entry: its name, size and sha256."""
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _checked_file(folder: Path, entry: dict) -> Path:
    """The file a manifest entry names, after checking it is there with the recorded size."""
    path = folder / entry["file"]
    if not path.is_file() or ("bytes" in entry and path.stat().st_size != entry["bytes"]):
        raise UserError(f"sentiment ONNX file {path} is missing or truncated (export the folder again)")
    return path


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a sentiment export folder; UserError (one line) when the folder is not one."""
    return load_manifest(Path(folder).expanduser() / MANIFEST, "sentiment ONNX", FORMAT,
                         ("format", "variants", "inputs", "labels", "temperature", "max_length", "pad_token_id"))


class OnnxSentiment:
    """`predict(texts)` as FineTunedSentiment's, from an export folder; `variant` fp32 or int8;
    `threads` and `workers` as OnnxEncoder's: fp32's intra-op threads over a batch (0: onnxruntime's
    default); how many texts int8 runs side by side, one at a time each (`map_texts`; 0: one per core).
    A `TailLabeler` (models/protocols.py): `tail` is set when this variant's tail graph loaded."""

    reads_encoder: Literal[False] = False  # its own pass: it needs the texts, not the shared encoder's features

    def __init__(self, folder: str | Path, variant: str = "int8", *, threads: int = 0, workers: int = 0,
                 manifest: dict | None = None):
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from tokenizers import Tokenizer

        self.folder = Path(folder).expanduser()
        self.manifest = manifest if manifest is not None else read_manifest(self.folder)
        entry = self.manifest["variants"].get(variant)
        if entry is None:
            raise UserError(f"sentiment ONNX folder {self.folder} has no {variant!r} variant")
        self.variant = variant
        self.runtime = RUNTIME_OF_VARIANT[variant]
        self.labels = list(self.manifest["labels"])
        self.temperature = float(self.manifest["temperature"])
        self.source = f"{self.folder}#{self.runtime}"
        path = _checked_file(self.folder, entry)
        try:
            self._tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise UserError(f"sentiment ONNX tokenizer in {self.folder} is unreadable: {str(exc).splitlines()[0]}") from None
        self._tokenizer.enable_truncation(max_length=int(self.manifest["max_length"]))
        self._tokenizer.enable_padding(pad_id=int(self.manifest["pad_token_id"]),
                                       pad_token=self.manifest.get("pad_token") or "[PAD]")
        intra = 1 if variant == "int8" else threads
        self.workers = one_text_workers(workers) if variant == "int8" else 1
        self._session = cpu_session(path, threads=intra, what="sentiment ONNX file")
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.max_length = int(self.manifest["max_length"])
        self.tail: dict | None = None  # the manifest's tail record when its graph for this variant loaded
        self._tail = None
        tail = self.manifest.get("tail")
        if tail and variant in (tail.get("variants") or {}):
            self._tail = cpu_session(_checked_file(self.folder, tail["variants"][variant]), threads=intra,
                                     what="sentiment ONNX file")
            self.tail = tail

    def takes_states(self, states: np.ndarray | None) -> bool:
        """Whether `predict_proba_shared` reads these token states through the tail (not the own pass)."""
        return self._tail is not None and states is not None and 0 < len(states) <= self.max_length

    def logits_shared(self, texts: list[str], states: list[np.ndarray | None]) -> np.ndarray:
        """Logits from another pass's token states (one (tokens, hidden) array per text, hidden state
        `tail["layer"]` of an encoder whose export `shares_prefix_with` this one): the tail for each text
        that fits max_length, the own pass for the others (and for every text without a tail)."""
        if len(states) != len(texts):
            raise ValueError("one token-state array per text")
        out = np.zeros((len(texts), len(self.labels)), np.float32)
        tail = [i for i, token_states in enumerate(states) if self.takes_states(token_states)]
        taken = set(tail)
        own = [i for i in range(len(texts)) if i not in taken]

        def run_tail(i: int) -> np.ndarray:  # one text a run: the graph takes one text's states
            return self._tail.run(["logits"], {"token_states": np.ascontiguousarray(states[i], dtype=np.float32)[None]})[0][0]

        if tail:
            out[tail] = map_texts(run_tail, tail, self.workers)
        if own:
            out[own] = self.logits([texts[i] for i in own])
        return out

    def predict_proba_shared(self, texts: list[str], states: list[np.ndarray | None]) -> np.ndarray:
        return softmax_np(self.logits_shared(texts, states), self.temperature)

    def predict_shared(self, texts: list[str], states: list[np.ndarray | None]) -> list[tuple[str, dict[str, float]]]:
        """As `predict`, from token states where it can (`logits_shared`)."""
        return self._labelled(self.predict_proba_shared(texts, states))

    def logits(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("logits() takes a list of texts")
        if not texts:
            return np.zeros((0, len(self.labels)), np.float32)
        if self.variant == "int8":  # batch-invariant labels (module doc): one text a run, side by side
            return np.concatenate(map_texts(lambda text: self._run([text]), list(texts), self.workers))
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        parts = [self._run([texts[i] for i in order[start:start + batch_size]])
                 for start in range(0, len(texts), batch_size)]
        return np.concatenate(parts)[np.argsort(np.array(order))]

    def _run(self, batch: list[str]) -> np.ndarray:
        batch = [text or " " for text in batch]
        if self.manifest.get("do_lower_case"):
            batch = [t.lower() for t in batch]
        encodings = self._tokenizer.encode_batch(batch)
        arrays = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                  "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                  "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
        return self._session.run(["logits"], {n: arrays[n] for n in self._inputs})[0].astype(np.float32)

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return softmax_np(self.logits(texts, batch_size), self.temperature)

    def predict(self, texts: list[str], batch_size: int = 64) -> list[tuple[str, dict[str, float]]]:
        """One (label, {label: probability}) per text, in input order."""
        return self._labelled(self.predict_proba(texts, batch_size))

    def _labelled(self, proba: np.ndarray) -> list[tuple[str, dict[str, float]]]:
        return [(self.labels[int(np.argmax(row))], {label: float(p) for label, p in zip(self.labels, row)})
                for row in proba]
