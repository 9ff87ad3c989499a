"""Feedback rows (from `Store.feedback_since`) → training data for the retrain.

Which feedback is new to a run is decided in one place, `new_since` / `new_feedback`: what changed
after `--since`, else after the store's watermark — the votes every model learns from (the encoder,
the intent head, the composer) and the sentiment corrections alike.

What a vote means:
- 👍 on an answer → the question is a **positive** example of the answer's intent and article.
- 👎 with a correction (an intent, an article, or a section by its id `doc#section`) → a **labelled**
  example of the corrected intent; a named section is the one its build files the question under;
  the article that was wrongly given becomes its hard negative.
- a pick from a clarifying question ("Did you mean…", origin `clarify`) → a **labelled** example of
  the picked article, with no negative;
- 👎 without a correction → a **hard negative** for retrieval only: the question is pushed away from
  the article it got. No label is ever invented for it.
- 👍 on a declined answer, a correction to "out of scope" by an ordinary user, a written answer
  without an intent or article: counted, not trained on (an admin's out-of-scope correction goes to
  the held-out set instead).

Defences against noisy and poisoned votes (all counted in `counts`):
- one vote per (question, user): a user's latest vote on a question text is the one that counts;
- **outlier voters** are ignored for the run: a user with at least `suspicious_min_votes` votes
  whose 👎 rate is more than `suspicious_factor` times and more than `suspicious_margin` above the
  median user's (honest users 👎 about as often as the bot is wrong; someone flipping right answers
  👎s most of them); admins are never flagged;
- conflicts between users are resolved by **distinct-user majority**; a tie, or as many users
  saying "wrong" (👎) about the winning intent as supporting it, drops the question;
  admin users (trusted) outrank everyone else on a question they voted on;
- a question whose text is a knowledge-base example of another intent is dropped (the KB wins);
- **per-user caps**: examples that rest on one user's word alone (no second user agrees) are
  limited to `max_examples_per_user` and to `max_user_share` of the run's examples (never fewer
  than `user_share_floor`); admins are exempt (`trust_admins`);
- questions in the frozen held-out set are never trained on;
- follow-ups (answers that `used_context`, read with the thread's earlier turn) are not learned: the
  store keeps no earlier turn, and the text alone means something else.
Texts are already redacted by the store.
"""

from __future__ import annotations

import hashlib
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from core.answer import OOS_ALIASES, OUT_OF_SCOPE
from retrieval.kb import Document, split_sections
from serving.versions import TrainingExample

ANONYMOUS = "anonymous"


def normalize(text: str) -> str:
    """The key under which questions are the same: case- and whitespace-insensitive."""
    return re.sub(r"\s+", " ", (text or "").strip().lower())


def stable_fraction(text: str, salt: str = "") -> float:
    """A deterministic number in [0, 1) for a text (for frozen, reproducible splits)."""
    digest = hashlib.sha256((salt + normalize(text)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class LabelledQuestion:
    text: str
    intent: str
    doc_id: str | None
    origin: str  # "thumbs_up" | "correction" | "admin"
    users: tuple[str, ...]  # distinct supporting users (hashes)
    trusted: bool = False
    section: str | None = None  # the section of doc_id the latest 👍 or correction named

    def example(self) -> TrainingExample:
        return TrainingExample(self.text, self.intent, origin=f"feedback:{self.origin}", doc_id=self.doc_id,
                               section=self.section)


@dataclass
class HardNegative:
    text: str
    negative_doc: str  # the article that was wrongly given
    positive_doc: str | None  # the right article when someone said which
    users: tuple[str, ...]
    # "That was wrong" is capped per user even from an admin: a negative is never an admin's
    # trusted label, so nothing sets this (cap_per_user reads it as it reads every capped item's).
    trusted: bool = False


@dataclass
class FeedbackData:
    labelled: list[LabelledQuestion] = field(default_factory=list)
    hard_negatives: list[HardNegative] = field(default_factory=list)
    admin_heldout: list[dict] = field(default_factory=list)  # {text, intent, doc_id}: frozen into the held-out set
    counts: dict = field(default_factory=dict)
    data_until: str | None = None

    @property
    def n_new(self) -> int:
        """New training items: labelled examples plus hard negatives."""
        return len(self.labelled) + len(self.hard_negatives)

    def examples(self) -> list[TrainingExample]:
        return [q.example() for q in self.labelled]


@dataclass
class _Claim:
    user: str
    trusted: bool
    label: str | None  # the intent this user says is right (None: only "that was wrong")
    doc_id: str | None
    negative_doc: str | None  # the article this user says was wrong
    negative_label: str | None
    kind: str  # thumbs_up | correction | down
    text: str
    time: str
    section: str | None = None  # a 👍: the section the answer quoted; a correction: the section it named


@dataclass
class _KbIndex:
    """The KB as the claims need it: articles by id, article ids by label, each example question's label."""
    docs: dict[str, Document]
    label_docs: dict[str, list[str]]
    kb_label: dict[str, str]

    @classmethod
    def of(cls, documents: list[Document]) -> "_KbIndex":
        label_docs: dict[str, list[str]] = defaultdict(list)
        kb_label: dict[str, str] = {}
        for doc in documents:
            label_docs[doc.label].append(doc.id)
            for question in doc.questions:
                kb_label.setdefault(normalize(question), doc.label)
        return cls({d.id: d for d in documents}, label_docs, kb_label)


# ----- what is new ----------------------------------------------------------------------------------

@dataclass
class NewFeedback:
    """What one retrain reads: the votes and the sentiment corrections changed after `since`."""
    since: Any  # the bound every model's data was read after (None: the beginning)
    votes: list[dict] = field(default_factory=list)  # Store.feedback_since rows, oldest first
    corrections: list[dict] | None = None  # Store.sentiment_corrections rows; None: not read or unreadable
    corrections_error: str | None = None  # why they could not be read


def new_since(store, since: Any = None) -> Any:
    """The one rule for what is new: feedback changed after `since` (a --since value) when given, else
    after the store's watermark (the newest `data_until` of a run that used up its feedback; store/runs.py)."""
    return since if since is not None else store.feedback_watermark()


def new_feedback(store, since: Any = None, *, max_votes: int | None = None, corrections: bool = True) -> NewFeedback:
    """Everything new to a retrain, by `new_since`, for every model it trains: the votes (at most
    `max_votes`, oldest first; the rest waits for the next run) and, with `corrections`, the sentiment
    corrections — all of them, as the votes' replay is (an optional table: a store that cannot give
    them leaves `corrections_error`)."""
    bound = new_since(store, since)
    new = NewFeedback(bound, store.feedback_since(bound, limit=max_votes))
    if corrections:
        try:
            # Every correction so far: they are the sentiment update's replay (votes have theirs in each
            # version's training_examples.jsonl), so a small team's trickle adds up to
            # sentiment_min_corrections instead of being used up a few at a time.
            new.corrections = list(store.sentiment_corrections(since=None))
        except Exception as exc:  # noqa: BLE001 - optional data: never fail the retrain over it
            new.corrections_error = str(exc)
    return new


# ----- votes → training data -------------------------------------------------------------------------

def build_feedback_data(rows: list[dict], documents: list[Document], *, config, admin_hashes: set[str] | frozenset = frozenset(),
                        heldout_texts: set[str] | frozenset = frozenset()) -> FeedbackData:
    """Turn feedback rows (oldest first) into resolved, capped training data (see the module doc)."""
    kb = _KbIndex.of(documents)
    counts: Counter = Counter()
    counts["rows"] = len(rows)
    suspicious = suspicious_users(rows, config, admin_hashes)
    counts["suspicious_users"] = len(suspicious)

    # 1. One claim per (question, user): the user's latest vote on that question text.
    claims: dict[str, dict[str, _Claim]] = defaultdict(dict)
    users_seen: set[str] = set()
    for row in rows:
        user = row.get("user_hash") or ANONYMOUS
        if user in suspicious:
            counts["suspicious_votes"] += 1
            continue
        key = _claim_key(row, counts, heldout_texts)
        if key is None:
            continue
        users_seen.add(user)
        claim = _claim(row, user, user in admin_hashes, kb, counts)
        if claim is not None:
            claims[key][user] = claim  # rows are oldest first: the latest vote wins
    counts["users"] = len(users_seen)

    # 2. Resolve each question by distinct-user majority.
    data = FeedbackData(data_until=rows[-1].get("time") if rows else None)
    _resolve_all(data, claims, kb, config, counts)

    # 3. Per-user caps on examples that rest on a single (untrusted) user's word.
    data.labelled = cap_per_user(data.labelled, config, counts, "capped_examples")
    data.hard_negatives = cap_per_user(data.hard_negatives, config, counts, "capped_hard_negatives")

    counts["labelled"] = len(data.labelled)
    counts["positives"] = sum(q.origin == "thumbs_up" for q in data.labelled)
    counts["corrections"] = sum(q.origin != "thumbs_up" for q in data.labelled)
    counts["hard_negatives"] = len(data.hard_negatives)
    counts["admin_heldout"] = len(data.admin_heldout)
    data.counts = dict(sorted(counts.items()))
    return data


def _claim_key(row: dict, counts: Counter, heldout_texts) -> str | None:
    """The question key a vote row may claim something about, or None (counted) when it cannot."""
    vote = row.get("vote")
    counts[f"votes_{vote}"] += 1
    text = (row.get("question") or "").strip()
    if not text or vote not in ("up", "down"):
        counts["skipped_no_question" if not text else "skipped_vote"] += 1
        return None
    if row.get("used_context"):
        # A follow-up ("and to Spain?") was answered together with the thread's earlier turn,
        # which the store does not keep: alone, the text means something else. Not learned.
        counts["skipped_followup"] += 1
        return None
    key = normalize(text)
    if key in heldout_texts:
        counts["skipped_heldout"] += 1
        return None
    return key


def _claim(row: dict, user: str, trusted: bool, kb: _KbIndex, counts: Counter) -> _Claim | None:
    """What one user's vote says about its question, or None (counted) when it says nothing trainable."""
    docs, label_docs = kb.docs, kb.label_docs
    answered_doc = row.get("answer_doc_id") if row.get("answer_doc_id") in docs else None
    answered_label = row.get("answer_intent")
    declined = bool(row.get("handoff")) or answered_label == OUT_OF_SCOPE or answered_doc is None
    claim = _Claim(user, trusted, None, None, None, None, "down", (row.get("question") or "").strip(),
                   row.get("time") or "")
    if row.get("vote") == "up" and row.get("origin") == "clarify":
        # A pick from the bot's "Did you mean…" question: the picked article labels the question;
        # nothing was answered wrongly, so there is no negative.
        label, doc_id, section = _correction(row, docs, label_docs, counts)
        if label is None:
            return None
        counts["clarify_picks"] += 1
        claim.kind, claim.label, claim.doc_id, claim.section = "correction", label, doc_id, section
        return claim
    if row.get("vote") == "up":
        if declined or answered_label not in label_docs:
            counts["up_on_declined"] += 1
            return None
        claim.kind, claim.label = "thumbs_up", answered_label
        claim.doc_id = answered_doc if docs[answered_doc].label == answered_label else label_docs[answered_label][0]
        section = row.get("answer_section")
        claim.section = section if claim.doc_id == answered_doc and section and section.startswith(f"{answered_doc}#") else None
        return claim
    if not declined:
        claim.negative_doc, claim.negative_label = answered_doc, docs[answered_doc].label
    label, doc_id, section = _correction(row, docs, label_docs, counts)
    if label is not None:
        claim.kind, claim.label, claim.doc_id, claim.section = "correction", label, doc_id, section
    elif claim.negative_doc is None:
        counts["down_on_declined"] += 1
        return None
    if claim.label is not None and claim.label == claim.negative_label:
        claim.negative_doc = claim.negative_label = None  # right intent, wrong article of it
    return claim


def _resolve_all(data: FeedbackData, claims: dict[str, dict[str, _Claim]], kb: _KbIndex, config, counts: Counter) -> None:
    """Each question's claims → a labelled example (or an admin's held-out row) and hard negatives, into `data`."""
    for key, by_user in claims.items():
        resolved = _resolve(key, list(by_user.values()), kb.kb_label, kb.label_docs, counts)
        if resolved is None:
            continue
        labelled, negatives = resolved
        if labelled is not None and labelled.intent == OUT_OF_SCOPE:
            if labelled.trusted:
                data.admin_heldout.append({"text": labelled.text, "intent": OUT_OF_SCOPE, "doc_id": None})
            else:
                counts["oos_claims"] += 1
            labelled = None
        elif labelled is not None and labelled.trusted and stable_fraction(key, "admin") < config.admin_heldout_fraction:
            # A trusted admin correction: a deterministic share is frozen into the held-out set.
            data.admin_heldout.append({"text": labelled.text, "intent": labelled.intent, "doc_id": labelled.doc_id})
            continue
        if labelled is not None:
            data.labelled.append(labelled)
        data.hard_negatives.extend(negatives)


def suspicious_users(rows: list[dict], config, admin_hashes=frozenset()) -> set[str]:
    """Users whose share of 👎 is an outlier among the users who voted enough (see the module doc)."""
    votes: Counter = Counter()
    downs: Counter = Counter()
    for row in rows:
        if row.get("vote") in ("up", "down"):
            user = row.get("user_hash") or ANONYMOUS
            votes[user] += 1
            downs[user] += row["vote"] == "down"
    rates = {u: downs[u] / n for u, n in votes.items() if n >= config.suspicious_min_votes}
    if len(rates) < 3:
        return set()
    median = statistics.median(rates.values())
    bar = max(config.suspicious_factor * median, median + config.suspicious_margin)
    return {u for u, rate in rates.items() if rate > bar and u not in admin_hashes}


def _correction(row: dict, docs: dict, label_docs: dict, counts: Counter) -> tuple[str | None, str | None, str | None]:
    """The (label, article, section) a 👎 row names (by section id, article or intent), or Nones. A
    section id ("refunds#how-long-a-refund-takes") names its article too; one the article no longer
    has (it was edited) still names the article."""
    doc_id, intent = row.get("correct_doc_id"), (row.get("correct_intent") or "").strip()
    if doc_id:
        doc_id, _, slug = doc_id.partition("#")
        if doc_id in docs:
            section = f"{doc_id}#{slug}"
            known = slug and section in {s.id for s in split_sections(docs[doc_id])}
            if slug and not known:
                counts["unknown_section"] += 1
            return docs[doc_id].label, doc_id, section if known else None
        counts["unknown_correction"] += 1
    if intent:
        if intent.lower() in OOS_ALIASES:
            return OUT_OF_SCOPE, None, None
        if intent in label_docs:
            return intent, label_docs[intent][0], None
        counts["unknown_correction"] += 1
    elif not doc_id and row.get("correct_answer"):
        counts["written_answer_only"] += 1
    return None, None, None


def _resolve(key: str, claims: list[_Claim], kb_label: dict, label_docs: dict, counts: Counter):
    """(LabelledQuestion | None, [HardNegative]) for one question, or None when it is dropped."""
    trusted = [c for c in claims if c.trusted and c.label is not None]
    voters = trusted or claims  # admins who named an intent outrank everyone else
    support: dict[str, set[str]] = defaultdict(set)
    for c in voters:
        if c.label is not None:
            support[c.label].add(c.user)
    against: dict[str, set[str]] = defaultdict(set)
    for c in claims:
        if c.negative_label is not None:
            against[c.negative_label].add(c.user)
    text = max(claims, key=lambda c: c.time).text
    labelled = None
    winner = None
    if support:
        ranked = sorted(support.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        winner, users = ranked[0]
        runner_up = len(ranked[1][1]) if len(ranked) > 1 else 0
        if len(users) == runner_up or (not trusted and len(against.get(winner, ())) >= len(users)):
            counts["conflicts_dropped"] += 1
            return None
        kb = kb_label.get(key)
        if kb is not None and winner != OUT_OF_SCOPE:
            counts["already_in_kb" if kb == winner else "contradicts_kb"] += 1
            if kb != winner:
                return None
        else:
            supporting = [c for c in voters if c.label == winner]
            origin = "admin" if trusted else ("correction" if any(c.kind == "correction" for c in supporting) else "thumbs_up")
            doc_id = Counter(c.doc_id for c in supporting if c.doc_id).most_common(1)
            doc = doc_id[0][0] if doc_id else None
            # The section the latest word on this article named: a 👍 confirms the quoted section, a
            # correction names another one (or none: the build then files the question by similarity), so
            # a 👍'd section stays until a later correction says otherwise.
            deciding = [c for c in supporting if c.doc_id == doc and (c.section or c.kind == "correction")]
            latest = max(deciding, key=lambda c: c.time, default=None)
            section = latest.section if latest is not None else None
            labelled = LabelledQuestion(text, winner, doc, origin, tuple(sorted(users)), bool(trusted), section)
    negatives = []
    negative_users: dict[str, set[str]] = defaultdict(set)
    for c in claims:
        if c.negative_doc is not None:
            negative_users[c.negative_doc].add(c.user)
    for doc_id, users in sorted(negative_users.items()):
        doc_label = next((label for label, ids in label_docs.items() if doc_id in ids), None)
        if winner is not None and doc_label == winner:
            continue  # the majority says this intent is right after all
        up_users = support.get(doc_label, set()) if winner is None else set()
        if len(users) <= len(up_users):
            counts["conflicts_dropped"] += 1
            continue
        positive = labelled.doc_id if labelled is not None else None
        negatives.append(HardNegative(text, doc_id, positive, tuple(sorted(users))))
    return labelled, negatives


class Capped(Protocol):
    """What `cap_per_user` reads of an item: LabelledQuestion, HardNegative, compose_data.ComposerRow."""
    text: str
    users: tuple[str, ...]  # distinct supporting user hashes
    trusted: bool  # an admin's (exempt with trust_admins)


C = TypeVar("C", bound=Capped)


def cap_per_user(items: list[C], config, counts: Counter, name: str) -> list[C]:
    """Keep at most the per-user allowance of each user's uncorroborated items (deterministic choice).

    The composer's rows (training/compose_data.py) are capped by the same rule."""
    total = len(items)
    allowance = min(config.max_examples_per_user, max(config.user_share_floor, int(config.max_user_share * total)))
    solo: dict[str, list[C]] = defaultdict(list)
    keep: list[C] = []
    for item in items:
        if (item.trusted and config.trust_admins) or len(item.users) > 1:
            keep.append(item)
        else:
            solo[item.users[0]].append(item)
    for user, own in solo.items():
        own.sort(key=lambda item: stable_fraction(item.text, user))
        keep.extend(own[:allowance])
        if len(own) > allowance:
            counts[name] += len(own) - allowance
            counts["capped_users"] += 1
    order = {id(item): i for i, item in enumerate(items)}
    return sorted(keep, key=lambda item: order[id(item)])


def merge_with_replay(new: list[TrainingExample], replay: list[TrainingExample], *, replay_max: int,
                      exclude: set[str] | frozenset = frozenset()) -> tuple[list[TrainingExample], dict]:
    """Earlier examples (newest `replay_max` kept) + the new ones; a new label for a text replaces the old."""
    new_keys = {normalize(ex.text) for ex in new}
    kept, seen = [], set()
    for ex in reversed(replay):  # newest first
        key = normalize(ex.text)
        if key in new_keys or key in exclude or key in seen:
            continue
        seen.add(key)
        kept.append(ex)
        if len(kept) >= replay_max:
            break
    kept.reverse()
    merged = kept + [ex for ex in new if normalize(ex.text) not in exclude]
    return merged, {"replayed": len(kept), "replay_available": len(replay), "new": len(new)}
