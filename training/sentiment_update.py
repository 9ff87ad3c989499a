"""Updating the sentiment head from people's sentiment corrections.

`Store.sentiment_corrections(since=None)` gives rows `{text, label, user_hash, time}`; a store that
cannot read them (an error) leaves the update skipped, with the reason in the report.

The update starts from the champion's head and fine-tunes all of its weights (the optional hidden
layer and the softmax layer; the feature standardisation and the temperature are kept) with
cross-entropy on the corrections plus a distillation term that keeps the head's old predictions on
replay texts (KB example questions and recent questions): the corrections move the head, the replay
keeps it from forgetting what it knew. The features are the frozen lower encoder layers, identical
in the champion and in the candidate.

Conflicts: per text, the majority label of distinct users wins (ties dropped); each user's
corrections are capped like intent feedback. In a retrain the corrections are the ones new since
the watermark (the run's one rule, training/feedback_data.new_feedback), and the held-out rows are
the run's frozen held-out set's sentiment rows (training/gate.py: a deterministic 20 % of each run's
corrections, kept across runs), never trained on. Only when that set has no sentiment rows (or a
caller passes none) is a deterministic 20 % of the corrections held out instead (the summary's
`heldout_from` says which). The new head is kept only if it is at least as accurate as the old one
on the held-out rows, better on the training corrections, and agrees with the old head on at least
`sentiment_min_agreement` of the replay texts.

`update_sentiment_model` does the same for the fine-tuned sentiment model (`models/sentiment_model.py`):
the LoRA adapter, the temperature and the rest of the artefact's meta are kept; only its head (the
`head_state` parameters: the hidden and output Linear) is fine-tuned, on the pooled features of the
merged model (computed once), with the same loss, checkpoint choice and gate. For a classifier a team
brought (`models/sentiment_brought.py`) only its final linear layer (the one giving the label logits)
is fine-tuned, on what that layer reads; the rest of its weights stay as its source has them.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from core.answer import SENTIMENT_LABELS
from training.feedback_data import normalize, stable_fraction
from training.gate import is_sentiment_heldout

log = logging.getLogger("csbot.retrain")


def resolve_corrections(rows: list[dict], *, max_per_user: int) -> tuple[list[tuple[str, str]], dict]:
    """Rows → [(text, label)] by distinct-user majority per text, at most `max_per_user` texts resting on one user."""
    counts: Counter = Counter(rows=len(rows))
    latest: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in sorted(rows, key=lambda r: str(r.get("time") or "")):
        label = str(row.get("label") or "").strip().lower()
        text = (row.get("text") or "").strip()
        if label not in SENTIMENT_LABELS or not text:
            counts["invalid"] += 1
            continue
        latest[normalize(text)][row.get("user_hash") or "anonymous"] = {"text": text, "label": label}
    out, solo = [], defaultdict(list)
    for key, by_user in latest.items():
        votes = Counter(v["label"] for v in by_user.values())
        ranked = votes.most_common()
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            counts["conflicts_dropped"] += 1
            continue
        label = ranked[0][0]
        text = next(v["text"] for v in by_user.values())
        supporters = [u for u, v in by_user.items() if v["label"] == label]
        if len(supporters) == 1:
            solo[supporters[0]].append((text, label))
        else:
            out.append((text, label))
    for user, items in solo.items():
        items.sort(key=lambda item: stable_fraction(item[0], user))
        if len(items) > max_per_user:
            counts["capped"] += len(items) - max_per_user
        out.extend(items[:max_per_user])
    counts["resolved"] = len(out)
    return out, dict(counts)


FALLBACK_HELDOUT = "a deterministic 20 % of the corrections (no held-out sentiment rows)"
RUN_HELDOUT = "the run's held-out set"


def _load_corrections(store, config, since, *, corrections: list[dict] | None = None,
                      heldout: list[tuple[str, str]] | None = None,
                      exclude: set[str] | frozenset = frozenset()) -> tuple[dict, list[tuple[str, str]], list[tuple[str, str]]]:
    """(summary, training pairs, held-out pairs). `corrections`: the rows the retrain read as new
    (training/feedback_data.new_feedback), else the store's since `since`. `heldout`: the run's frozen
    sentiment rows (training/gate.py), never trained on, like every text in `exclude` (normalised); when
    there are none, a deterministic 20 % of the corrections is held out instead. The summary already
    has a `status` (skipped / unavailable) when there is nothing to train: the caller returns it as is."""
    if not config.sentiment_update:
        return {"status": "skipped", "reason": "sentiment_update is off"}, [], []
    if corrections is None:
        try:
            corrections = list(store.sentiment_corrections(since=since))
        except Exception as exc:  # noqa: BLE001 - optional step: never fail the retrain over it
            log.warning("sentiment corrections unreadable: %s", exc)
            return {"status": "unavailable", "reason": f"unreadable: {exc}"}, [], []
    pairs, counts = resolve_corrections(corrections, max_per_user=config.max_examples_per_user)
    if heldout:
        held = list(heldout)
        never = set(exclude) | {normalize(text) for text, _ in held}
        train = [p for p in pairs if normalize(p[0]) not in never]
    else:
        held = [p for p in pairs if is_sentiment_heldout(p[0])]
        train = [p for p in pairs if not is_sentiment_heldout(p[0]) and normalize(p[0]) not in exclude]
    summary: dict = {"counts": counts, "train": len(train), "heldout": len(held),
                     "heldout_from": RUN_HELDOUT if heldout else FALLBACK_HELDOUT}
    if len(train) < config.sentiment_min_corrections:
        return {**summary, "status": "skipped",
                "reason": f"{len(train)} usable corrections, fewer than sentiment_min_corrections={config.sentiment_min_corrections}"}, train, held
    return summary, train, held


def _replay(replay_texts: list[str]) -> list[str]:
    return list(dict.fromkeys(t for t in replay_texts if t))[:3000]


def _judge(summary: dict, old: dict, new: dict, y_train: np.ndarray, y_held: np.ndarray, n_replay: int,
           min_agreement: float) -> list[str]:
    """Add the accuracies and the replay agreement to `summary` from the old and the new head's predicted
    classes (`old` / `new`: {"train", "held", "replay"} -> class indices); the reasons to reject the new
    head (none: keep it)."""

    def accuracy(pred, y):
        return float((pred == y).mean()) if len(y) else None

    agreement = float((new["replay"] == old["replay"]).mean()) if n_replay else 1.0
    summary.update({"old_train_accuracy": accuracy(old["train"], y_train), "new_train_accuracy": accuracy(new["train"], y_train),
                    "old_heldout_accuracy": accuracy(old["held"], y_held), "new_heldout_accuracy": accuracy(new["held"], y_held),
                    "replay_agreement": round(agreement, 4), "replay_texts": n_replay})
    reasons = []
    if summary["new_train_accuracy"] <= summary["old_train_accuracy"]:
        reasons.append("no gain on the corrections")
    if len(y_held) and summary["new_heldout_accuracy"] < summary["old_heldout_accuracy"]:
        reasons.append("worse on held-out corrections")
    if agreement < min_agreement:
        reasons.append(f"agrees with the old head on only {agreement:.0%} of replay texts")
    return reasons


def update_sentiment_head(store, head_path: Path, encoder, replay_texts: list[str], out_path: Path, config,
                          *, since=None, corrections: list[dict] | None = None,
                          heldout: list[tuple[str, str]] | None = None, exclude: set[str] | frozenset = frozenset()) -> dict:
    """Fine-tune the head at `head_path` on the store's sentiment corrections (or `corrections`, the
    rows a retrain read), judged on `heldout` (see `_load_corrections`); writes `out_path` when kept.

    Returns a summary dict with `status`: unavailable | skipped | rejected | updated.
    """
    summary, train, held = _load_corrections(store, config, since, corrections=corrections, heldout=heldout,
                                             exclude=exclude)
    if "status" in summary:
        return summary
    from models.heads import SoftmaxHead, features_for

    old = SoftmaxHead.load(head_path)
    replay = _replay(replay_texts)

    def feats(texts):
        return features_for(old.feature_spec, encoder.encode(list(texts))) if texts else np.zeros((0, 1), np.float32)

    x_train, x_held, x_replay = feats([t for t, _ in train]), feats([t for t, _ in held]), feats(replay)
    y_train = np.array([old.labels.index(label) for _, label in train])
    y_held = np.array([old.labels.index(label) for _, label in held])
    new = _finetune(old, x_train, y_train, x_replay, seed=config.seed, min_agreement=config.sentiment_min_agreement)

    def predicted(head):
        return {name: head.proba_from_features(x).argmax(1) if len(x) else np.zeros(0, int)
                for name, x in (("train", x_train), ("held", x_held), ("replay", x_replay))}

    reasons = _judge(summary, predicted(old), predicted(new), y_train, y_held, len(replay),
                     config.sentiment_min_agreement)
    if reasons:
        return {**summary, "status": "rejected", "reason": "; ".join(reasons)}
    new.info = {**old.info, "updated_from_corrections": len(train)}
    new.save(out_path)
    return {**summary, "status": "updated", "path": str(out_path)}


def _finetune(old, x, y, x_replay, *, seed: int, min_agreement: float, steps: int = 300, lr: float = 5e-4,
              check_every: int = 10):
    """`_fit` on a SoftmaxHead (features standardised as the head does): a copy of `old` with the
    chosen weights (else the old head's)."""
    import copy

    import torch

    mean = None if old.mean is None else torch.from_numpy(old.mean)
    scale = None if old.scale is None else torch.from_numpy(old.scale)

    def prep(a):
        t = torch.from_numpy(np.asarray(a, dtype=np.float32))
        return (t - mean) / scale if mean is not None else t

    params = {"w": torch.tensor(old.weights, requires_grad=True), "b": torch.tensor(old.bias, requires_grad=True)}
    if old.hidden_weights is not None:
        params["hw"] = torch.tensor(old.hidden_weights, requires_grad=True)
        params["hb"] = torch.tensor(old.hidden_bias, requires_grad=True)

    def logits(t):
        if "hw" in params:
            t = torch.relu(t @ params["hw"] + params["hb"])
        return t @ params["w"] + params["b"]

    best = _fit(params, logits, prep(x), torch.from_numpy(y), prep(x_replay) if len(x_replay) else None,
                temperature=old.temperature, seed=seed, min_agreement=min_agreement, steps=steps, lr=lr,
                check_every=check_every)
    new = copy.deepcopy(old)
    new.weights = best["w"].numpy().astype(np.float32)
    new.bias = best["b"].numpy().astype(np.float32)
    if "hw" in best:
        new.hidden_weights = best["hw"].numpy().astype(np.float32)
        new.hidden_bias = best["hb"].numpy().astype(np.float32)
    return new


def _fit(params: dict, logits, xt, yt, xr, *, temperature: float, seed: int, min_agreement: float, steps: int = 300,
         lr: float = 5e-4, check_every: int = 10) -> dict:
    """Adam on `params` (leaf tensors that `logits(features)` reads): cross-entropy on the corrections
    (xt, yt) + distillation to the starting predictions on the replay features `xr` (None: no replay) +
    a small L2 pull to the starting weights. Every `check_every` steps the weights are checked; returns
    (detached copies of) those that fit the corrections best among those that still agree with the
    start on at least `min_agreement` of the replay texts, else the starting weights."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        target = torch.softmax(logits(xr) / temperature, dim=1) if xr is not None else None
        old_replay = target.argmax(1) if xr is not None else None
    # The replay term weighs at least as much as the corrections, however few replay texts there are.
    distill_weight = 2.0 * max(1.0, len(yt) / max(1, 0 if xr is None else len(xr)))
    init = {k: v.detach().clone() for k, v in params.items()}
    opt = torch.optim.Adam(params.values(), lr=lr)
    best, best_fit = None, -1.0
    for step in range(1, steps + 1):
        loss = torch.nn.functional.cross_entropy(logits(xt) / temperature, yt)
        if xr is not None:
            log_p = torch.log_softmax(logits(xr) / temperature, dim=1)
            loss = loss + distill_weight * torch.nn.functional.kl_div(log_p, target, reduction="batchmean")
        loss = loss + 1e-3 * sum(((params[k] - init[k]) ** 2).sum() for k in params)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % check_every == 0:
            with torch.no_grad():
                fit = float((logits(xt).argmax(1) == yt).float().mean())
                agree = float((logits(xr).argmax(1) == old_replay).float().mean()) if xr is not None else 1.0
            if agree >= min_agreement and fit > best_fit:
                best, best_fit = {k: v.detach().clone() for k, v in params.items()}, fit
    return best or init


def update_sentiment_model(store, artefact_path: Path, replay_texts: list[str], out_path: Path, config,
                           *, since=None, device: str = "cpu", corrections: list[dict] | None = None,
                           heldout: list[tuple[str, str]] | None = None, exclude: set[str] | frozenset = frozenset()) -> dict:
    """`update_sentiment_head` for the fine-tuned sentiment model (`models/sentiment_model.py`): the
    artefact at `artefact_path` ("builtin" or a path) keeps its LoRA adapter, temperature and meta; only
    its head (the `head_state` parameters) is fine-tuned, on the pooled features of the merged model.
    Writes the new artefact to `out_path` when kept (never over the input).

    Returns a summary dict with `status`: unavailable | skipped | rejected | updated.
    """
    summary, train, held = _load_corrections(store, config, since, corrections=corrections, heldout=heldout,
                                             exclude=exclude)
    if "status" in summary:
        return summary
    import torch

    from models.sentiment_model import FineTunedSentiment, head_state, read_artefact, write_artefact
    from models.sentiment_model import artefact_path as resolve_artefact

    source = resolve_artefact(artefact_path)
    if Path(out_path).resolve() == source.resolve():
        raise ValueError(f"update_sentiment_model would overwrite its input {source}")
    from models.sentiment_brought import read_brought

    if read_brought(source) is not None:
        return _update_brought(summary, source, train, held, replay_texts, out_path, config, device=device)
    meta, lora, _ = read_artefact(source)
    model = FineTunedSentiment.load(source, device=device)
    classifier = model.classifier
    replay = _replay(replay_texts)
    x_train, x_held, x_replay = (_pooled(model, texts) for texts in ([t for t, _ in train], [t for t, _ in held], replay))
    y_train = np.array([model.labels.index(label) for _, label in train])
    y_held = np.array([model.labels.index(label) for _, label in held])

    params = {name: p for name, p in classifier.named_parameters() if not name.startswith("encoder.")}
    for p in params.values():
        p.requires_grad_(True)

    def predicted():
        with torch.no_grad():
            return {name: classifier.head_logits(x).argmax(1).cpu().numpy() if len(x) else np.zeros(0, int)
                    for name, x in (("train", x_train), ("held", x_held), ("replay", x_replay))}

    old = predicted()
    best = _fit(params, classifier.head_logits, x_train, torch.from_numpy(y_train).to(model.device),
                x_replay if len(x_replay) else None, temperature=model.temperature, seed=config.seed,
                min_agreement=config.sentiment_min_agreement)
    with torch.no_grad():  # the chosen weights, matrices rounded to float16 as the artefact stores them
        for name, p in params.items():
            p.copy_(best[name].half().to(p.dtype) if best[name].ndim == 2 else best[name])
    reasons = _judge(summary, old, predicted(), y_train, y_held, len(replay), config.sentiment_min_agreement)
    if reasons:
        return {**summary, "status": "rejected", "reason": "; ".join(reasons)}
    info = {**meta.get("info", {}), "updated_from_corrections": len(train)}
    write_artefact(Path(out_path), lora=lora, scaling=float(meta["scaling"]), head=head_state(classifier),
                   meta={**meta, "info": info})
    return {**summary, "status": "updated", "path": str(out_path)}


def _pooled(model, texts: list[str], batch_size: int = 64):
    """The merged model's pooled features (what its head reads) for `texts`: a (n, features) tensor on
    the model's device, outside inference mode (so the head can be trained on it)."""
    import torch

    if not texts:
        return torch.zeros((0, (model.classifier.hidden or model.classifier.head).in_features), device=model.device)
    parts = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            tokens = {k: v.to(model.device) for k, v in model.tokenize(texts[start:start + batch_size]).items()}
            parts.append(model.classifier.pooled(**tokens).float())
    return torch.cat(parts).clone()


# One linear layer on fixed features: a larger step than the builtin head's (5e-4), so 300 steps can move
# a confident pretrained layer; the best checkpoint that keeps the replay agreement is still what is kept.
BROUGHT_LR = 2e-3


def _update_brought(summary: dict, source: Path, train, held, replay_texts: list[str], out_path: Path, config,
                    *, device: str) -> dict:
    """`update_sentiment_model` for a classifier a team brought (models/sentiment_brought.py): only its
    final linear layer (the one giving the label logits) is fine-tuned, on what that layer reads, with
    the same fit, replay distillation and judgement; the rest of the model stays as its source has it."""
    import torch

    from models.sentiment_brought import read_brought, write_brought
    from models.sentiment_model import FineTunedSentiment

    meta, _ = read_brought(source)
    model = FineTunedSentiment.load(source, device=device)
    classifier = model.classifier
    replay = _replay(replay_texts)
    x_train, x_held, x_replay = (_features(model, texts) for texts in ([t for t, _ in train], [t for t, _ in held], replay))
    y_train = np.array([model.labels.index(label) for _, label in train])
    y_held = np.array([model.labels.index(label) for _, label in held])
    params = dict(classifier.final.named_parameters())
    for p in params.values():
        p.requires_grad_(True)

    def predicted():
        with torch.no_grad():
            return {name: classifier.head_logits(x).argmax(1).cpu().numpy() if len(x) else np.zeros(0, int)
                    for name, x in (("train", x_train), ("held", x_held), ("replay", x_replay))}

    old = predicted()
    best = _fit(params, classifier.head_logits, x_train, torch.from_numpy(y_train).to(model.device),
                x_replay if len(x_replay) else None, temperature=model.temperature, seed=config.seed,
                min_agreement=config.sentiment_min_agreement, lr=BROUGHT_LR)
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(best[name])
    reasons = _judge(summary, old, predicted(), y_train, y_held, len(replay), config.sentiment_min_agreement)
    if reasons:
        return {**summary, "status": "rejected", "reason": "; ".join(reasons)}
    head = {name: p.detach().float().cpu().numpy() for name, p in params.items()}
    write_brought(Path(out_path), {**meta, "updated_from_corrections": len(train)}, head)
    return {**summary, "status": "updated", "path": str(out_path), "updated": "the final linear layer"}


def _features(model, texts: list[str], batch_size: int = 64):
    """What a brought model's final layer reads for `texts`: a (n, features) tensor on its device."""
    import torch

    if not texts:
        return torch.zeros((0, model.classifier.final.in_features), device=model.device)
    parts = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            tokens = {k: v.to(model.device) for k, v in model.tokenize(texts[start:start + batch_size]).items()}
            parts.append(model.classifier.pooled(**tokens).float())
    return torch.cat(parts).clone()
