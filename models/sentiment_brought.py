"""A sentiment classifier a team brings: any `AutoModelForSequenceClassification` (a hub name or a local
folder) whose labels map to negative / neutral / positive (docs/sentiment.md "Bringing your own classifier").

`training/export.py: sentiment_artefact(settings)` turns the `sentiment_model` setting into the artefact a
build copies into the version: for "builtin" or an artefact file, that file (models/sentiment_model.py);
for a folder or hub name, a small `.npz` written here (`bring`) that names the model and holds its final
linear layer:

- `meta`: JSON — format, `source` (the resolved folder or the hub name), `labels` (always
  negative / neutral / positive), `model_labels` (the canonical name of each of the model's ids),
  `neutral_band` (binary models), `final_layer` (the module that gives the label logits), `max_length`;
- `head.weight`, `head.bias`: that layer's parameters, float32. The nightly retrain updates them from
  sentiment corrections (training/sentiment_update.py); the rest of the model is read from `source`.

The torch module (`load_classifier`; `FineTunedSentiment.load` serves it as `BroughtSentiment`) outputs three "logits" in the canonical order, so the ONNX
export, the int8 rule, the engine and the retrain's gate treat it as they treat the builtin model:
- three labels: the model's logits, reordered;
- two labels (negative, positive): the log of three probabilities. With d = |p_pos - p_neg| and the band
  b (`sentiment_neutral_band`), neutral's share is n = min(1, (1+b)/(3+b) * (1-d)/(1-b)) (0 when b = 0)
  and negative / positive share the rest in the model's ratio. Neutral is then the top label exactly
  when d < b (its share crosses max(p)(1-n) at d = b), and the three sum to 1.

The artefact file is named by a digest of what it holds, and one already written is reused, so a
rebuild with the same model has the same artefact sha256 and links the earlier ONNX export.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from core.answer import SENTIMENT_LABELS
from core.errors import UserError

FORMAT = "csbot-sentiment-brought/1"
MAX_LENGTH = 128  # tokens a brought model reads (watched-channel messages are short; int8 runs one text)
SYNONYMS = {
    "negative": ("negative", "neg", "bad", "label_negative", "very negative"),
    "neutral": ("neutral", "neu", "neut", "none", "objective", "mixed"),
    "positive": ("positive", "pos", "good", "label_positive", "very positive"),
}
_CANONICAL = {name: label for label, names in SYNONYMS.items() for name in names}


def is_brought(spec: str) -> bool:
    """Whether a `sentiment_model` value names a classifier to bring (a folder or a hub name), not
    "builtin", "none" or an artefact file."""
    text = str(spec).strip()
    if text.lower() in ("builtin", "none") or not text:
        return False
    path = Path(text).expanduser()
    if path.is_file() or path.suffix == ".npz":
        return False
    return path.is_dir() or not text.startswith((".", "/", "~"))


def map_labels(id2label: dict, names: str = "", *, source: str = "") -> list[str]:
    """The canonical label (negative / neutral / positive) of each of the model's ids, in id order:
    from `names` (the `sentiment_labels` setting: comma-separated, one per id) when given, else from
    the model's `id2label`. UserError (one line) when they do not map to three distinct labels or to
    negative and positive."""
    ids = sorted(int(i) for i in id2label)
    given = [n.strip() for n in str(names).split(",")] if str(names).strip() else [str(id2label[i]) for i in ids]
    where = f"sentiment model {source}" if source else "sentiment model"
    if len(given) != len(ids):
        raise UserError(f"{where} has {len(ids)} labels but sentiment_labels names {len(given)}: "
                        f"give one name per id, in order (e.g. \"negative,neutral,positive\")")
    mapped = [_CANONICAL.get(n.lower().replace("_", " ").strip()) or _CANONICAL.get(n.lower().strip()) for n in given]
    ok = None not in mapped and len(set(mapped)) == len(mapped) and (
        sorted(mapped) == sorted(SENTIMENT_LABELS) or sorted(mapped) == ["negative", "positive"])
    if not ok:
        hint = ("; set sentiment_labels to the names of ids 0..n-1, e.g. \"negative,neutral,positive\""
                if not str(names).strip() else "")
        raise UserError(f"{where}: cannot map its labels {given} to negative/neutral/positive "
                        f"(or negative/positive){hint}")
    return mapped


def neutral_band_factor(band: float) -> float:
    """c in n = min(1, c * (1 - d)) (module doc); 0 when the band is 0 (a binary model is never neutral)."""
    band = float(band)
    return 0.0 if band <= 0 else (1 + band) / ((3 + band) * (1 - band))


# ----- turning a setting into an artefact ------------------------------------------------------------

def _load_hf(source: str):
    """(AutoModelForSequenceClassification in eval mode, fast tokenizer, resolved source); one-line errors."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from models.loading import ModelNotFoundError, prepare_local_load, quiet_transformers, resolve_model_path

    try:
        path = resolve_model_path(source)
        prepare_local_load(path)
        quiet_transformers()
        model = AutoModelForSequenceClassification.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except ModelNotFoundError as exc:
        raise UserError(f"sentiment model {source}: {exc}") from None
    except (OSError, ValueError, KeyError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"sentiment model {source} cannot be loaded as a sequence classifier: {detail}") from None
    return model.eval(), tokenizer, path


def final_layer(model) -> str:
    """The name of the module that gives the label logits: the last Linear with num_labels outputs."""
    import torch

    n = int(model.config.num_labels)
    names = [name for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and module.out_features == n]
    if not names:
        raise UserError(f"sentiment model {model.config.name_or_path}: no linear layer gives its {n} label logits")
    return names[-1]


_BROUGHT: dict[tuple, Path] = {}  # what `bring` wrote in this process: a build asks several times


def _signature(source: str) -> tuple:
    """What identifies a source's files as they are now (a folder: each file's name, size and mtime)."""
    path = Path(source).expanduser()
    if not path.is_dir():
        return (source,)
    return (str(path.resolve()),) + tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                                 for p in path.iterdir() if p.is_file()))


def bring(source: str, *, labels: str, band: float, cache: Path) -> Path:
    """Write (or find) the artefact of the classifier `source` (module doc) under `cache`; its path."""
    key = (_signature(source), str(labels), float(band), str(cache))
    if key in _BROUGHT and _BROUGHT[key].is_file():
        return _BROUGHT[key]
    _BROUGHT[key] = path = _bring(source, labels=labels, band=band, cache=cache)
    return path


def _bring(source: str, *, labels: str, band: float, cache: Path) -> Path:
    model, tokenizer, path = _load_hf(source)
    mapped = map_labels(model.config.id2label, labels, source=source)
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"sentiment model {source}: its tokenizer has no fast version (needed for ONNX serving)")
    layer = final_layer(model)
    module = model.get_submodule(layer)
    head = {"weight": module.weight.detach().float().numpy(), "bias": module.bias.detach().float().numpy()}
    meta = {"format": FORMAT, "source": str(path), "labels": list(SENTIMENT_LABELS), "model_labels": mapped,
            "final_layer": layer, "max_length": min(MAX_LENGTH, int(getattr(tokenizer, "model_max_length", MAX_LENGTH))),
            "temperature": 1.0, "architecture": (model.config.architectures or [type(model).__name__])[0]}
    if len(mapped) == 2:
        meta["neutral_band"] = float(band)
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(head):
        digest.update(head[name].tobytes())
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"brought-{digest.hexdigest()[:20]}.npz"
    if not out.is_file():
        write_brought(out, meta, head)
    return out


def write_brought(path: Path, meta: dict, head: dict[str, np.ndarray]) -> None:
    """Write a brought artefact atomically (a temp file, then a rename)."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps({**meta, "format": FORMAT})),
             **{f"head.{k}": np.asarray(v, np.float32) for k, v in head.items()})
    tmp.replace(path)


def read_brought(path: Path) -> tuple[dict, dict[str, np.ndarray]] | None:
    """(meta, head arrays) of a brought artefact; None when the file is another kind of artefact."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                return None
            head = {k[len("head."):]: data[k].astype(np.float32) for k in data.files if k.startswith("head.")}
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None  # models/sentiment_model.read_artefact reports what is wrong with it
    return meta, head


# ----- serving ----------------------------------------------------------------------------------------

def _module_class():
    import torch

    class BroughtClassifier(torch.nn.Module):
        """The brought model with its label logits mapped to the canonical order (module doc)."""

        def __init__(self, model, layer: str, mapped: list[str], band: float):
            super().__init__()
            self.model = model
            self.encoder = model.base_model  # what the ONNX export switches to eager attention
            self.final = model.get_submodule(layer)
            self.binary = len(mapped) == 2
            self.columns = [mapped.index(label) for label in
                            (("negative", "positive") if self.binary else SENTIMENT_LABELS)]
            self.factor = neutral_band_factor(band) if self.binary else 0.0
            self._captured = None
            self.final.register_forward_pre_hook(self._capture)

        def _capture(self, module, args):
            self._captured = args[0]

        def canonical(self, raw):
            if not self.binary:
                return raw[:, self.columns]
            p = torch.softmax(raw.float(), dim=-1)
            neg, pos = p[:, self.columns[0]], p[:, self.columns[1]]
            share = (self.factor * (1 - (pos - neg).abs())).clamp(max=1.0)
            probs = torch.stack([neg * (1 - share), share, pos * (1 - share)], dim=-1)
            return torch.log(probs.clamp(min=1e-12))

        def _run(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            return self.model(**kwargs).logits

        def pooled(self, input_ids, attention_mask, token_type_ids=None):
            """What the final layer reads (captured on its way in): the features the retrain trains on."""
            self._run(input_ids, attention_mask, token_type_ids)
            features, self._captured = self._captured, None
            return features

        def head_logits(self, features):
            return self.canonical(self.final(features))

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            return self.canonical(self._run(input_ids, attention_mask, token_type_ids))

    return BroughtClassifier


def load_classifier(path: Path, meta: dict, head: dict[str, np.ndarray]):
    """(the torch module that gives canonical logits, the tokenizer, the `info` for FineTunedSentiment)
    of a brought artefact: its source loaded, its final layer set from the artefact."""
    import torch

    model, tokenizer, _ = _load_hf(meta["source"])
    try:
        final = model.get_submodule(meta["final_layer"])
        with torch.no_grad():
            final.weight.copy_(torch.from_numpy(head["weight"]))
            final.bias.copy_(torch.from_numpy(head["bias"]))
    except (AttributeError, KeyError, RuntimeError) as exc:
        raise UserError(f"sentiment model {path}: its head does not fit {meta['source']} "
                        f"({str(exc).splitlines()[0]})") from None
    classifier = _module_class()(model, meta["final_layer"], meta["model_labels"], meta.get("neutral_band", 0.0))
    info = {"brought": meta["source"], "model_labels": meta["model_labels"],
            **({"neutral_band": meta["neutral_band"]} if "neutral_band" in meta else {})}
    return classifier, tokenizer, info
