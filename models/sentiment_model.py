"""A dedicated fine-tuned sentiment model: all-MiniLM-L6-v2 + a LoRA adapter + a 3-way head.

Unlike `models/sentiment.py` (a head over the shared encoder pass's frozen layers), this model runs
its own transformer pass: the base encoder's weights with a LoRA adapter merged in at load, so
serving is one plain forward pass:

    tokens -> BERT (LoRA merged) -> hidden states -> mean pool over the attention mask of each
           layer in `meta.layers` (one: as is; several: each layer-normalised, concatenated)
           -> head (linear, or one ReLU layer then linear) -> logits -> softmax(logits / temperature)

The artefact (`models/assets/sentiment_lora.npz`, built by `training/train_sentiment_model.py`, see
docs/sentiment.md) is one `.npz`:
- `meta`: JSON — labels, base encoder name, max_length, temperature, LoRA rank / alpha / scaling,
  the list of adapted modules, and the training `info`;
- `lora.<module>.A` (r, in) and `lora.<module>.B` (out, r), float16, for every adapted Linear
  (module names as in the Hugging Face BertModel, e.g. `encoder.layer.0.attention.self.query`);
  merging adds `scaling * B @ A` to that Linear's weight (peft's maths);
- `head.<name>`: the head's parameters (`head.weight`, `head.bias`, and `hidden.weight`,
  `hidden.bias` for an MLP head), matrices float16, biases float32; `meta.layers` names the pooled hidden states.

For ONNX export take `FineTunedSentiment.torch_model()`: an `nn.Module` with
`forward(input_ids, attention_mask, token_type_ids) -> logits` (keyword arguments to the BERT, as
transformers 5 needs); `probabilities(logits)` is the last step (temperature + softmax).
"""

from __future__ import annotations

import json
import threading
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np

from core.answer import SENTIMENT_LABELS
from core.errors import UserError

BUILTIN_ARTEFACT = Path(__file__).resolve().parent / "assets" / "sentiment_lora.npz"
DEFAULT_BASE = "builtin:all-MiniLM-L6-v2"
FORMAT = "csbot-sentiment-lora/1"


def artefact_path(spec: str | Path = "builtin") -> Path:
    """The artefact a setting names: `"builtin"` (the shipped one) or a path; a clear error when missing."""
    path = BUILTIN_ARTEFACT if str(spec) == "builtin" else Path(spec).expanduser()
    if not path.is_file():
        hint = " (reinstall csbot or run training/train_sentiment_model.py)" if path == BUILTIN_ARTEFACT else ""
        raise UserError(f"sentiment model {path} is missing{hint}")
    return path


def shared_layers(adapted: list[str], pooled: list[int], n_layers: int) -> int | None:
    """How many of the base encoder's lower layers a sentiment model leaves as they are and reads only
    through the layers above: k, so that it can continue from another pass's hidden state k when that
    pass has the same lower layers (models/sentiment_onnx.py, the tail graph). `adapted`: the LoRA
    module names; `pooled`: the hidden states its head pools (meta "layers"). None when there is
    nothing to share: an adapted module outside the transformer layers, the bottom layer adapted, or a
    head that pools a hidden state below k."""
    indices = []
    for name in adapted:
        parts = name.split(".")
        if parts[:2] != ["encoder", "layer"] or len(parts) < 3 or not parts[2].isdigit():
            return None
        indices.append(int(parts[2]))
    k = min(min(indices) if indices else n_layers, n_layers - 1)  # the tail runs one layer at least
    if k < 1 or min(i if i >= 0 else n_layers + 1 + i for i in pooled) < k:
        return None
    return k


def artefact_shared_layers(path: Path) -> int | None:
    """`shared_layers` of an artefact, from its meta and its base encoder's config (no model loaded)."""
    from models.loading import resolve_model_path
    from models.sentiment_brought import read_brought

    if read_brought(Path(path)) is not None:  # a brought classifier: its own weights throughout
        return None
    meta, lora, _ = read_artefact(Path(path))
    try:
        config = json.loads((Path(resolve_model_path(meta.get("base", DEFAULT_BASE))) / "config.json").read_text())
        n_layers = int(config["num_hidden_layers"])
    except Exception:  # noqa: BLE001 - a base that cannot be resolved here: nothing is shared
        return None
    return shared_layers(list(lora), [int(x) for x in meta.get("layers", [-1])], n_layers)


# ----- the maths shared by training, serving and export ---------------------------------------------

def mean_pool(hidden, attention_mask):
    """Mean of the token states over the attention mask (torch tensors: (b, t, h), (b, t) -> (b, h))."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def softmax_np(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _classifier_class():
    import torch

    class SentimentClassifier(torch.nn.Module):
        """BERT encoder -> mean pool of the chosen hidden states -> head. `forward` returns logits.

        `layers`: which hidden states are pooled (0 = word embeddings, -1 / n = the last layer); with
        more than one, each pooled vector is layer-normalised (no affine) and they are concatenated.
        `hidden`: 0 for a linear head, else one ReLU layer of that width before the output layer."""

        def __init__(self, encoder, n_labels: int, *, layers=(-1,), hidden: int = 0, dropout: float = 0.0):
            super().__init__()
            self.encoder = encoder
            self.layers = [int(x) for x in layers]
            size = self.size = int(encoder.config.hidden_size)
            self.normalise = len(self.layers) > 1
            n_in = size * len(self.layers)
            self.dropout = torch.nn.Dropout(dropout)
            self.hidden = torch.nn.Linear(n_in, hidden) if hidden else None
            self.head = torch.nn.Linear(hidden or n_in, n_labels)

        def pooled(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            if self.layers == [-1]:
                return mean_pool(self.encoder(**kwargs).last_hidden_state, attention_mask)
            return self.pool_states(self.encoder(**kwargs, output_hidden_states=True).hidden_states, attention_mask)

        def pool_states(self, states, attention_mask):
            """The pooled features from the encoder's hidden states (a tuple: embeddings, layer 1, ...)."""
            parts = [mean_pool(states[i], attention_mask) for i in self.layers]
            if self.normalise:
                parts = [torch.nn.functional.layer_norm(p, (self.size,)) for p in parts]  # a constant shape: ONNX export
            return torch.cat(parts, dim=-1)

        def head_logits(self, pooled):
            x = self.dropout(pooled)
            if self.hidden is not None:
                x = self.dropout(torch.relu(self.hidden(x)))
            return self.head(x)

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            return self.head_logits(self.pooled(input_ids, attention_mask, token_type_ids))

    return SentimentClassifier


def build_classifier(base: str = DEFAULT_BASE, n_labels: int = len(SENTIMENT_LABELS), *, layers=(-1,),
                     hidden: int = 0, dropout: float = 0.0):
    """(classifier with the base encoder's weights and a fresh head, tokenizer); loads offline."""

    from transformers import AutoModel, AutoTokenizer

    from models.loading import ModelNotFoundError, prepare_local_load, resolve_model_path

    path = resolve_model_path(base)
    prepare_local_load(path)
    try:
        encoder = AutoModel.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load model {base!r}: {exc}") from exc
    return _classifier_class()(encoder, n_labels, layers=layers, hidden=hidden, dropout=dropout), tokenizer


def head_state(classifier) -> dict[str, np.ndarray]:
    """The head's parameters (everything outside the encoder) as float32 arrays."""
    return {name: value.detach().float().cpu().numpy().copy()
            for name, value in classifier.state_dict().items() if not name.startswith("encoder.")}


def write_artefact(path: Path, *, lora: dict[str, tuple[np.ndarray, np.ndarray]], scaling: float,
                   head: dict[str, np.ndarray], meta: dict) -> None:
    """Write the artefact atomically (a temp file, then a rename); LoRA and head matrices as float16."""
    path = Path(path)
    # Weight matrices as float16 (half the size), biases as float32; all read back as float32.
    arrays = {f"head.{name}": np.asarray(value, np.float16 if np.ndim(value) == 2 else np.float32)
              for name, value in head.items()}
    for name, (a, b) in lora.items():
        arrays[f"lora.{name}.A"] = np.asarray(a, np.float16)
        arrays[f"lora.{name}.B"] = np.asarray(b, np.float16)
    meta = {**meta, "format": FORMAT, "modules": sorted(lora), "head_params": sorted(head), "scaling": float(scaling)}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
    tmp.replace(path)


def read_artefact(path: Path) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]], dict[str, np.ndarray]]:
    """(meta, {module: (A, B)}, {head parameter: array}) as float32; UserError on a bad file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            lora = {m: (data[f"lora.{m}.A"].astype(np.float32), data[f"lora.{m}.B"].astype(np.float32))
                    for m in meta["modules"]}
            head = {name: data[f"head.{name}"].astype(np.float32) for name in meta["head_params"]}
    except FileNotFoundError as exc:
        raise UserError(f"sentiment model {path} is missing") from exc
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"sentiment model {path} is unreadable: {detail}") from exc
    labels = list(meta.get("labels", []))
    problems = []
    if labels != list(SENTIMENT_LABELS):
        problems.append(f"labels {labels}, expected {list(SENTIMENT_LABELS)}")
    elif "head.weight" not in head or head["head.weight"].ndim != 2 or head["head.weight"].shape[0] != len(labels):
        problems.append("head does not match its labels")
    if any(a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1] for a, b in lora.values()):
        problems.append("LoRA matrices do not chain")
    if problems:
        raise UserError(f"sentiment model {path} is unreadable: {'; '.join(problems)}")
    return meta, lora, head


def merge_lora(encoder, lora: dict[str, tuple[np.ndarray, np.ndarray]], scaling: float, source: str = "") -> None:
    """Add `scaling * B @ A` to each adapted Linear's weight, in place (peft's merge)."""
    import torch

    with torch.no_grad():
        for name, (a, b) in lora.items():
            try:
                module = encoder.get_submodule(name)
            except AttributeError as exc:
                raise UserError(f"sentiment model {source} adapts {name}, which the base encoder lacks") from exc
            weight = module.weight
            if tuple(weight.shape) != (b.shape[0], a.shape[1]):
                raise UserError(f"sentiment model {source}: LoRA of {name} is {b.shape[0]}x{a.shape[1]}, "
                                f"the base weight {tuple(weight.shape)}")
            weight += scaling * (torch.from_numpy(b) @ torch.from_numpy(a)).to(weight.dtype)


# ----- serving ----------------------------------------------------------------------------------------

class FineTunedSentiment:
    """The fine-tuned sentiment model, LoRA merged: `predict(texts)` runs its own forward pass
    (models/protocols.py `TextLabeler`)."""

    reads_encoder: Literal[False] = False  # its own pass: it needs the texts, not the shared encoder's features
    runtime = "torch"

    def __init__(self, classifier, tokenizer, *, labels: list[str], temperature: float, max_length: int,
                 info: dict, source: str = "<memory>", device: str = "cpu", adapted: list[str] | None = None):
        self.classifier = classifier.eval()
        self.adapted = list(adapted or [])  # the LoRA-adapted modules (names as in the BertModel)
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.temperature = float(temperature)
        self.max_length = int(max_length)
        self.info = info
        self.source = source
        self.device = device
        self._lock = threading.Lock()

    @classmethod
    def load(cls, spec: str | Path = "builtin", *, base: str | None = None, device: str = "cpu",
             threads: int | None = None) -> FineTunedSentiment:
        """Load `"builtin"` (the shipped artefact) or a path; `base` overrides the encoder the artefact
        names; `threads` > 0 sets torch's intra-op threads (process-wide, like `torch_threads`)."""
        import torch

        from models.loading import pick_device
        from models.sentiment_brought import read_brought

        path = artefact_path(spec)
        if threads:
            torch.set_num_threads(int(threads))
        brought = read_brought(path)
        if brought is not None:  # a classifier a team brought (models/sentiment_brought.py)
            return BroughtSentiment.load_brought(path, *brought, device=device)
        meta, lora, head = read_artefact(path)
        classifier, tokenizer = build_classifier(base or meta.get("base", DEFAULT_BASE), len(meta["labels"]),
                                                 layers=meta.get("layers", [-1]), hidden=int(meta.get("hidden", 0)))
        merge_lora(classifier.encoder, lora, float(meta["scaling"]), str(path))
        try:
            classifier.load_state_dict({k: torch.from_numpy(v) for k, v in head.items()}, strict=False)
        except RuntimeError as exc:
            raise UserError(f"sentiment model {path}: its head does not fit the encoder "
                            f"({str(exc).splitlines()[-1].strip()})") from exc
        missing = sorted(set(head_state(classifier)) - set(head))
        if missing:
            raise UserError(f"sentiment model {path} is unreadable: head parameters {missing} are missing")
        device = pick_device(device)
        classifier.to(device)
        return cls(classifier, tokenizer, labels=meta["labels"], temperature=float(meta.get("temperature", 1.0)),
                   max_length=int(meta.get("max_length", 64)), info=dict(meta.get("info", {})),
                   source=str(path), device=device, adapted=list(lora))

    def shared_layers(self) -> int | None:
        """`shared_layers` (below) of this model."""
        return shared_layers(self.adapted, self.classifier.layers,
                             int(self.classifier.encoder.config.num_hidden_layers))

    def torch_model(self):
        """The merged `nn.Module` (eval mode): forward(input_ids, attention_mask, token_type_ids) -> logits."""
        return self.classifier

    def tokenize(self, texts: list[str]) -> dict:
        """Token tensors as the model reads them (truncated to max_length, padded to the longest)."""
        return self.tokenizer([t or " " for t in texts], padding=True, truncation=True,
                              max_length=self.max_length, return_tensors="pt")

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Temperature, then softmax: the step after the network's logits."""
        return softmax_np(logits, self.temperature)

    def logits(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import torch

        if isinstance(texts, str):
            raise TypeError("logits() takes a list of texts")
        if not texts:
            return np.zeros((0, len(self.labels)), np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding; order restored below
        parts = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = self.tokenize([texts[i] for i in order[start:start + batch_size]])
                tokens = {k: v.to(self.device) for k, v in tokens.items()}
                parts.append(self.classifier(**tokens).float().cpu().numpy())
        return np.concatenate(parts)[np.argsort(np.array(order))]

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(n, len(labels)) probabilities, columns in `self.labels` order."""
        return self.probabilities(self.logits(texts, batch_size))

    def predict(self, texts: list[str], batch_size: int = 64) -> list[tuple[str, dict[str, float]]]:
        """One (label, {label: probability}) per text, in input order (as SentimentModel.predict)."""
        proba = self.predict_proba(texts, batch_size)
        return [
            (self.labels[int(np.argmax(row))], {label: float(p) for label, p in zip(self.labels, row)})
            for row in proba
        ]


class BroughtSentiment(FineTunedSentiment):
    """A classifier a team brought (models/sentiment_brought.py), served as the fine-tuned model is
    (`predict`, `torch_model`, `tokenize`); it shares nothing with the encoder pass (no tail graph)."""

    @classmethod
    def load_brought(cls, path: Path, meta: dict, head: dict[str, np.ndarray], *, device: str = "cpu") -> BroughtSentiment:
        from models.loading import pick_device
        from models.sentiment_brought import MAX_LENGTH, load_classifier

        classifier, tokenizer, info = load_classifier(path, meta, head)
        device = pick_device(device)
        classifier.to(device)
        return cls(classifier, tokenizer, labels=list(SENTIMENT_LABELS), temperature=1.0,
                   max_length=int(meta.get("max_length", MAX_LENGTH)), info=info, source=str(path), device=device)

    def shared_layers(self) -> int | None:
        return None
