"""A softmax classification head over encoder features, run with numpy at serving time.

Trained with scikit-learn's LogisticRegression (multinomial), then calibrated by temperature scaling
on held-out predictions. Saved as one `.npz` file: weights, bias, labels, feature spec, temperature.

Feature spec: `"embedding"` reads the sentence embedding; `"layers:3,4"` concatenates the mean-pooled
hidden states of those layers. Features are standardised with the stored mean and scale.

Optionally a head has one hidden layer (`hidden_weights`, `hidden_bias`, ReLU) before the softmax
layer, trained with torch by `fit_mlp_head`; it is saved in the same `.npz` (extra arrays) and still
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


def fit_softmax_head(
    features: np.ndarray,
    labels: list[str],
    *,
    feature_spec: str = "embedding",
    c: float = 10.0,
    standardize: bool = False,
    class_weight: str | None = None,
    calibrate: bool = True,
    seed: int = 13,
    max_iter: int = 1000,
) -> SoftmaxHead:
    """Fit a multinomial logistic regression and calibrate its temperature on held-out folds."""
    from sklearn.linear_model import LogisticRegression

    features = np.asarray(features, dtype=np.float32)
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise UserError("a classifier needs at least two different labels")
    mean = scale = None
    x = features
    if standardize:
        mean = features.mean(axis=0)
        scale = features.std(axis=0) + 1e-6
        x = (features - mean) / scale
    y = np.array([classes.index(label) for label in labels])
    model = LogisticRegression(C=c, max_iter=max_iter, class_weight=class_weight, random_state=seed)
    model.fit(x, y)
    weights, bias = _full_weights(model, len(classes), x.shape[1])
    head = SoftmaxHead(classes, weights, bias, feature_spec, mean, scale)
    if calibrate:
        head.temperature = _fit_temperature(x, y, len(classes), c, class_weight, seed, max_iter)
    return head


def _full_weights(model, n_classes: int, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    coef, intercept = model.coef_, model.intercept_
    if n_classes == 2 and coef.shape[0] == 1:  # binary LR stores one row: logits (0, z)
        coef = np.vstack([np.zeros(n_features), coef[0]])
        intercept = np.array([0.0, intercept[0]])
    return coef.T.astype(np.float32), intercept.astype(np.float32)


def _fit_temperature(x, y, n_classes, c, class_weight, seed, max_iter, folds: int = 3) -> float:
    """Temperature that minimises held-out log-loss over `folds` cross-validation folds."""
    from sklearn.linear_model import LogisticRegression

    counts = np.bincount(y, minlength=n_classes)
    if counts.min() < 2:
        return 1.0
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=int)
    for label in range(n_classes):  # stratified assignment
        idx = np.flatnonzero(y == label)
        fold_of[idx] = rng.permutation(len(idx)) % folds
    held_logits, held_y = [], []
    for fold in range(folds):
        train, test = fold_of != fold, fold_of == fold
        if len(set(y[train])) < n_classes or not test.any():
            continue
        model = LogisticRegression(C=c, max_iter=max_iter, class_weight=class_weight, random_state=seed)
        model.fit(x[train], y[train])
        w, b = _full_weights(model, n_classes, x.shape[1])
        held_logits.append(x[test] @ w + b)
        held_y.append(y[test])
    if not held_logits:
        return 1.0
    logits, target = np.concatenate(held_logits), np.concatenate(held_y)
    best_t, best_loss = 1.0, np.inf
    for t in np.exp(np.linspace(np.log(0.05), np.log(10), 80)):
        p = _softmax(logits / t)
        loss = -np.log(p[np.arange(len(target)), target] + 1e-12).mean()
        if loss < best_loss:
            best_t, best_loss = float(t), loss
    return best_t


def fit_mlp_head(
    features: np.ndarray,
    labels: list[str],
    *,
    feature_spec: str = "embedding",
    hidden: int = 256,
    members: int = 1,
    epochs: int = 20,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    dropout: float = 0.3,
    input_dropout: float = 0.1,
    batch_size: int = 256,
    class_weight: str | None = None,
    sample_weight: np.ndarray | None = None,
    calibration: tuple[np.ndarray, list[str]] | None = None,
    seed: int = 13,
    on_epoch=None,
) -> SoftmaxHead:
    """Fit a one-hidden-layer ReLU head with torch (Adam, cross-entropy) on standardised features.

    `members` > 1 trains that many nets from different seeds and stores them as one head whose
    logits are their mean (the hidden layers are concatenated, output weights divided by `members`).
    `class_weight="balanced"` weights each class by n / (n_classes * n_class); `sample_weight`
    multiplies per-example losses. The temperature is fitted on `calibration` (held-out features and
    labels) when given, else left at 1. `on_epoch(member, epoch, head)` is called after each epoch.
    """
    import torch

    features = np.asarray(features, dtype=np.float32)
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise UserError("a classifier needs at least two different labels")
    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6
    x = torch.from_numpy((features - mean) / scale)
    y = torch.tensor([classes.index(label) for label in labels])
    w = torch.ones(len(y)) if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float32)
    if class_weight == "balanced":
        counts = torch.bincount(y, minlength=len(classes)).float()
        w = w * (len(y) / (len(classes) * counts))[y]
    elif class_weight is not None:
        raise ValueError(f"unknown class_weight {class_weight!r}")
    w = w / w.mean()

    parts = []
    for member in range(members):
        gen = torch.Generator().manual_seed(seed + member)
        torch.manual_seed(seed + member)
        net = torch.nn.Sequential(
            torch.nn.Dropout(input_dropout), torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(),
            torch.nn.Dropout(dropout), torch.nn.Linear(hidden, len(classes)),
        )
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        steps = epochs * ((len(y) + batch_size - 1) // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
        for epoch in range(epochs):
            net.train()
            order = torch.randperm(len(y), generator=gen)
            for start in range(0, len(y), batch_size):
                idx = order[start:start + batch_size]
                loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx], reduction="none")
                loss = (loss * w[idx]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            if on_epoch is not None:
                on_epoch(member, epoch, _mlp_to_head(net, classes, feature_spec, mean, scale))
        parts.append(net)

    head = _mlp_to_head(parts[0], classes, feature_spec, mean, scale)
    if members > 1:
        nets = [_mlp_to_head(net, classes, feature_spec, mean, scale) for net in parts]
        head.hidden_weights = np.concatenate([h.hidden_weights for h in nets], axis=1)
        head.hidden_bias = np.concatenate([h.hidden_bias for h in nets])
        head.weights = np.concatenate([h.weights for h in nets], axis=0) / members
        head.bias = np.mean([h.bias for h in nets], axis=0).astype(np.float32)
    if calibration is not None:
        cal_x, cal_labels = calibration
        cal_y = np.array([classes.index(label) for label in cal_labels])
        head.temperature = _best_temperature(head.logits(np.asarray(cal_x, dtype=np.float32)), cal_y)
    return head


def _mlp_to_head(net, classes, feature_spec, mean, scale) -> SoftmaxHead:
    first, last = net[1], net[4]
    return SoftmaxHead(
        classes,
        last.weight.detach().numpy().T.astype(np.float32).copy(),
        last.bias.detach().numpy().astype(np.float32).copy(),
        feature_spec, mean.astype(np.float32), scale.astype(np.float32),
        hidden_weights=first.weight.detach().numpy().T.astype(np.float32).copy(),
        hidden_bias=first.bias.detach().numpy().astype(np.float32).copy(),
    )


def _best_temperature(logits: np.ndarray, target: np.ndarray) -> float:
    best_t, best_loss = 1.0, np.inf
    for t in np.exp(np.linspace(np.log(0.05), np.log(10), 80)):
        p = _softmax(logits / t)
        loss = -np.log(p[np.arange(len(target)), target] + 1e-12).mean()
        if loss < best_loss:
            best_t, best_loss = float(t), loss
    return best_t
