"""A softmax classification head over encoder features, run with numpy at serving time.

Fitted by training/fit_heads.py (scikit-learn's multinomial LogisticRegression, calibrated by
temperature scaling on held-out predictions); this module only serves it. Saved as one `.npz` file: weights, bias, labels, feature spec, temperature.

Feature spec: `"embedding"` reads the sentence embedding; `"layers:3,4"` concatenates the mean-pooled
hidden states of those layers. Features are standardised with the stored mean and scale.

Optionally a head has one hidden layer (`hidden_weights`, `hidden_bias`, ReLU) before the softmax
layer, trained with torch by `training/fit_heads.py: fit_mlp_head`; it is saved in the same `.npz` (extra arrays) and still
run with numpy. Files without those arrays load as the plain linear head.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import UserError
from models.encoder import Encoded


def features_for(spec: str, encoded: Encoded) -> np.ndarray:
    if spec == "embedding":
        return encoded.embeddings
    if spec.startswith("layers:"):
        wanted = [int(x) for x in spec.split(":", 1)[1].split(",")]
        return encoded.layers[:, wanted, :].reshape(len(encoded.layers), -1)
    raise ValueError(f"unknown feature spec {spec!r}")


def layers_read(spec: str) -> list[int]:
    """Which encoder layers a head reads (`embedding` reads the last one)."""
    if spec.startswith("layers:"):
        return [int(x) for x in spec.split(":", 1)[1].split(",")]
    return [-1]


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    return logits / logits.sum(axis=1, keepdims=True)


@dataclass
class SoftmaxHead:
    labels: list[str]
    weights: np.ndarray  # (n_features, n_labels)
    bias: np.ndarray  # (n_labels,)
    feature_spec: str = "embedding"
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    temperature: float = 1.0
    info: dict = field(default_factory=dict)
    # Optional hidden layer: x -> relu(x @ hidden_weights + hidden_bias) -> weights, bias.
    hidden_weights: np.ndarray | None = None  # (n_features, n_hidden)
    hidden_bias: np.ndarray | None = None  # (n_hidden,)

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = features.astype(np.float32, copy=False)
        if self.mean is not None:
            x = (x - self.mean) / self.scale
        if self.hidden_weights is not None:
            x = np.maximum(x @ self.hidden_weights + self.hidden_bias, 0.0)
        return x @ self.weights + self.bias

    def predict_proba(self, encoded: Encoded) -> np.ndarray:
        return self.proba_from_features(features_for(self.feature_spec, encoded))

    def proba_from_features(self, features: np.ndarray) -> np.ndarray:
        return _softmax(self.logits(features) / self.temperature)

    def save(self, path: Path, *, half: bool = False) -> None:
        """Write the head atomically. `half=True` stores the weight matrices as float16 (half the
        size; they are read back as float32)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        matrix = np.float16 if half else np.float32
        arrays = {"weights": self.weights.astype(matrix), "bias": self.bias.astype(np.float32)}
        if self.mean is not None:
            arrays["mean"] = self.mean.astype(np.float32)
            arrays["scale"] = self.scale.astype(np.float32)
        if self.hidden_weights is not None:
            arrays["hidden_weights"] = self.hidden_weights.astype(matrix)
            arrays["hidden_bias"] = self.hidden_bias.astype(np.float32)
        meta = {"labels": self.labels, "feature_spec": self.feature_spec, "temperature": self.temperature,
                "info": self.info}
        np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "SoftmaxHead":
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))

                def array(name):
                    return data[name].astype(np.float32) if name in data else None

                head = cls(
                    labels=list(meta["labels"]),
                    weights=data["weights"].astype(np.float32),
                    bias=data["bias"].astype(np.float32),
                    feature_spec=meta["feature_spec"],
                    mean=array("mean"),
                    scale=array("scale"),
                    temperature=float(meta.get("temperature", 1.0)),
                    info=dict(meta.get("info", {})),
                    hidden_weights=array("hidden_weights"),
                    hidden_bias=array("hidden_bias"),
                )
        except FileNotFoundError as exc:
            raise UserError(f"model head {path} is missing") from exc
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise UserError(f"model head {path} is unreadable: {exc}") from exc
        head._check(path)
        return head

    def _check(self, path) -> None:
        """Shapes must chain: a truncated or mixed-up file fails here, not at the first message."""
        n_in = self.weights.shape[0] if self.hidden_weights is None else self.hidden_weights.shape[0]
        problems = []
        if self.weights.ndim != 2 or self.weights.shape[1] != len(self.labels) or self.bias.shape != (len(self.labels),):
            problems.append("output layer does not match its labels")
        if self.hidden_weights is not None and (
            self.hidden_bias is None or self.hidden_bias.shape != (self.hidden_weights.shape[1],)
            or self.weights.shape[0] != self.hidden_weights.shape[1]
        ):
            problems.append("hidden layer does not match the output layer")
        if self.mean is not None and (self.mean.shape != (n_in,) or self.scale is None or self.scale.shape != (n_in,)):
            problems.append("standardisation does not match the input size")
        if problems:
            raise UserError(f"model head {path} is unreadable: {'; '.join(problems)}")
