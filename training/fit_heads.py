"""Fitting the heads that models/heads.py serves: the intent head (a calibrated multinomial logistic
regression over the sentence embedding), and the logistic / MLP heads `training/train_sentiment.py`
builds the shipped sentiment head with. Temperatures are fitted by one search (`_best_temperature`)
on held-out logits.
"""

from __future__ import annotations

import warnings

import numpy as np

from core.errors import UserError
from core.settings import SEED
from models.heads import SoftmaxHead, _softmax  # noqa: PLC2701 (the one softmax)

INTENT_C = 10.0


def train_intent_head(embeddings: np.ndarray, labels: list[str], *, seed: int = SEED) -> SoftmaxHead:
    """The head over the KB's intents. A KB of one intent gets a constant head (probability 1): it
    tells nothing, so the version's tuned threshold switches it off and retrieval decides."""
    if len(set(labels)) == 1:
        dim = np.asarray(embeddings).shape[1]
        head = SoftmaxHead([labels[0]], np.zeros((dim, 1), np.float32), np.zeros(1, np.float32), "embedding")
        head.info = {"examples": len(labels), "intents": 1, "constant": True}
        return head
    head = fit_softmax_head(embeddings, labels, feature_spec="embedding", c=INTENT_C, seed=seed)
    head.info = {"examples": len(labels), "intents": len(set(labels)), "c": INTENT_C}
    return head


def fit_softmax_head(
    features: np.ndarray,
    labels: list[str],
    *,
    feature_spec: str = "embedding",
    c: float = 10.0,
    standardize: bool = False,
    class_weight: str | None = None,
    calibrate: bool = True,
    seed: int = SEED,
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
    model = _fit(LogisticRegression(C=c, max_iter=max_iter, class_weight=class_weight, random_state=seed), x, y)
    weights, bias = _full_weights(model, len(classes), x.shape[1])
    head = SoftmaxHead(classes, weights, bias, feature_spec, mean, scale)
    if calibrate:
        head.temperature = _fit_temperature(x, y, len(classes), c, class_weight, seed, max_iter)
    return head


def _fit(model, x: np.ndarray, y: np.ndarray):
    """`model.fit(x, y)`, without scikit-learn's warning that many classes with one row each look like a
    regression problem: a KB without example questions trains on a title and a few headings per
    article, so most of its classes have one row by design."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%",
                                category=UserWarning)
        return model.fit(x, y)


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
        model = _fit(LogisticRegression(C=c, max_iter=max_iter, class_weight=class_weight, random_state=seed),
                     x[train], y[train])
        w, b = _full_weights(model, n_classes, x.shape[1])
        held_logits.append(x[test] @ w + b)
        held_y.append(y[test])
    if not held_logits:
        return 1.0
    return _best_temperature(np.concatenate(held_logits), np.concatenate(held_y))


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
    seed: int = SEED,
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
    w = _loss_weights(y, len(classes), sample_weight, class_weight)

    def member_epoch(member):
        if on_epoch is None:
            return None
        return lambda epoch, net: on_epoch(member, epoch, _mlp_to_head(net, classes, feature_spec, mean, scale))

    parts = [_train_mlp(x, y, w, len(classes), seed=seed + member, hidden=hidden, epochs=epochs, lr=lr,
                        weight_decay=weight_decay, dropout=dropout, input_dropout=input_dropout, batch_size=batch_size,
                        on_epoch=member_epoch(member))
             for member in range(members)]

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


def _loss_weights(y, n_classes: int, sample_weight: np.ndarray | None, class_weight: str | None):
    """Per-example loss weights (a torch tensor, mean 1): `sample_weight`, times n / (n_classes * n_class)
    with class_weight="balanced"."""
    import torch

    w = torch.ones(len(y)) if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float32)
    if class_weight == "balanced":
        counts = torch.bincount(y, minlength=n_classes).float()
        w = w * (len(y) / (n_classes * counts))[y]
    elif class_weight is not None:
        raise ValueError(f"unknown class_weight {class_weight!r}")
    return w / w.mean()


def _train_mlp(x, y, w, n_classes: int, *, seed: int, hidden: int, epochs: int, lr: float, weight_decay: float,
               dropout: float, input_dropout: float, batch_size: int, on_epoch=None):
    """One net of the head, trained from `seed` (AdamW, one-cycle schedule, weighted cross-entropy);
    `on_epoch(epoch, net)` after each epoch."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Dropout(input_dropout), torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(),
        torch.nn.Dropout(dropout), torch.nn.Linear(hidden, n_classes),
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
            on_epoch(epoch, net)
    return net


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
