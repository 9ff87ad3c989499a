"""Feedback rows and the knowledge base → the composer's training rows (training/compose_train.py).

Every row is a prompt built by `serving.compose.build_messages` — the function that builds the served
prompt, so training and serving see the same text — and an answer:

- **👍 on a composed answer** (answer_mode compose, outcome composed) → an SFT row and a KTO
  *desirable* row: the stored question, the sections the model read (the answer's
  `composition.passages`, looked up again in the version's KB documents) and the stored composed text.
- **👎 on a composed answer** → a KTO *undesirable* row (unpaired: KTO needs no better answer).
- **KB rows** (replay against forgetting, every run): for each article section, a question (the
  article's example questions, each under the section it matches best; else the section's heading,
  or the title for the lead, turned into a question) → the section's first sentences, each cited
  " [1]". The prompt holds that section as [1] and the closest section of another article as [2],
  as the served prompt holds the chosen section first and other sources after it.
- **Abstention rows**: generic off-topic questions (models/assets/offtopic_questions.txt, not the
  gate's own list) with the two closest sections → NO_ANSWER.

The votes go through the classifier's defences (training/feedback_data.py, reused, not copied): the
same outlier voters are ignored, each user's latest vote on a composed answer (question + text)
counts once, distinct users decide (admins outrank), a tie drops it, examples resting on one user's
word are capped per user (`max_examples_per_user`, `max_user_share`, `user_share_floor`; admins
exempt), held-out questions and follow-ups are never learned (a follow-up's earlier turns are not
stored). A 👍'd answer is also checked by the guard against its rebuilt sections
(`composer_guard_targets`): an answer that invents a number the sections lack is not learned even
when users liked it.

What cannot be rebuilt exactly: the earlier thread turns a composed prompt held (not stored), and
which part of a long section was quoted (the section is clipped from its start, as the engine clips).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from retrieval.kb import Document, Section, plain_text, split_sections
from serving.compose import ABSTAIN, Passage, build_messages, check, clip_words
from training.feedback_data import ANONYMOUS, cap_per_user, normalize, stable_fraction, suspicious_users

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z][a-z0-9']+")
_TRAILING_ENUMERATOR = re.compile(r"\s+\d{1,2}[.)]$")
_LINE_MARKER = re.compile(r"^\s*(?:#{1,6}|>|[-*+]|\d{1,2}[.)])\s+")
_OVERLAP_STOP = set("""the and for you your are was can how what when where why who which this that with from have has not
does did our out get got any all about into there here them they their then than its it's i'm""".split())


@dataclass
class ComposerRow:
    """One training row: the prompt's question and sections, and an answer (desirable or not)."""

    question: str
    passages: list[Passage]
    target: str
    desirable: bool = True
    origin: str = "kb"  # thumbs_up | thumbs_down | kb | abstain
    users: tuple[str, ...] = ()
    trusted: bool = False

    @property
    def text(self) -> str:  # what the per-user cap sorts on (training/feedback_data.py)
        return self.question

    def prompt(self) -> list[dict]:
        return build_messages(self.question, self.passages)

    def sft(self) -> dict:
        """A conversational prompt-completion row (TRL's SFTTrainer: loss on the answer only)."""
        return {"prompt": self.prompt(), "completion": [{"role": "assistant", "content": self.target}]}

    def kto(self) -> dict:
        """An unpaired preference row (TRL's KTOTrainer)."""
        return {**self.sft(), "label": bool(self.desirable)}

    def summary(self) -> dict:
        return {"question": self.question, "answer": self.target[:300], "origin": self.origin,
                "desirable": self.desirable, "users": len(self.users),
                "passages": [{"n": p.n, "doc_id": p.doc_id, "heading": p.heading} for p in self.passages]}


@dataclass
class ComposerData:
    sft: list[ComposerRow] = field(default_factory=list)  # 👍 composed answers + KB rows + abstention rows
    kto: list[ComposerRow] = field(default_factory=list)  # 👍 desirable, 👎 undesirable (+ KB rows to balance)
    counts: dict = field(default_factory=dict)

    @property
    def n_feedback(self) -> int:
        """Rows learned from votes on composed answers (after every defence)."""
        return self.counts.get("sft_feedback", 0) + self.counts.get("kto_undesirable", 0)

    @property
    def n_votes(self) -> int:
        """Votes on composed answers read this run (before the defences)."""
        return self.counts.get("composed_votes", 0)


# ----- sections and passages (shared with the composer's gate) ----------------------------------

class SectionIndex:
    """The KB's sections, with the word overlap the engine uses to pick a further source's section."""

    def __init__(self, documents: list[Document]):
        self.docs = {d.id: d for d in documents}
        self.sections: dict[str, list[Section]] = {d.id: [s for s in split_sections(d) if s.text.strip()]
                                                   for d in documents}
        self._words = {s.id: _words(d.title + " " + s.heading + " " + s.text)
                       for d in documents for s in self.sections[d.id]}

    def best_section(self, doc_id: str, question: str) -> Section | None:
        sections = self.sections.get(doc_id) or []
        q = _words(question)
        return max(sections, key=lambda s: (len(q & self._words[s.id]), -sections.index(s)), default=None)

    def closest(self, question: str, *, exclude_doc: str | None = None, k: int = 1) -> list[Section]:
        """The best-matching section of each of the `k` closest other articles."""
        q = _words(question)
        scored = []
        for doc_id, sections in self.sections.items():
            if doc_id == exclude_doc or not sections:
                continue
            best = max(sections, key=lambda s: (len(q & self._words[s.id]), -sections.index(s)))
            scored.append((-len(q & self._words[best.id]), stable_fraction(question, best.id), best))
        return [s for _, _, s in sorted(scored, key=lambda t: t[:2])[:k]]

    def quoted(self, section: Section, *, first: bool, section_max_words: int) -> str:
        """What the engine puts in a passage for this section: the whole article for the lead of a
        short article when it is the chosen one (serving/engine.py `_quote`), else the section."""
        doc = self.docs[section.doc_id]
        if first and not section.heading and len(doc.answer.split()) <= section_max_words:
            return doc.answer
        return section.text

    def passage(self, n: int, section: Section, *, section_words: int, section_max_words: int) -> Passage:
        doc = self.docs[section.doc_id]
        text = self.quoted(section, first=n == 1, section_max_words=section_max_words)
        return Passage(n, doc.id, doc.title, section.heading, doc.url, clip_words(text, section_words))

    def prompt_passages(self, question: str, section: Section | None, *, section_words: int,
                        section_max_words: int, others: int = 1) -> list[Passage]:
        """[1] the section (None: no right section, e.g. an off-topic question), then the closest
        sections of `others` other articles."""
        chosen = [section] if section is not None else []
        rest = self.closest(question, exclude_doc=section.doc_id if section else None,
                            k=others if section is not None else others + 1)
        return [self.passage(n, s, section_words=section_words, section_max_words=section_max_words)
                for n, s in enumerate(chosen + rest, start=1)]

    def rebuild(self, stored: list[dict], *, section_words: int, section_max_words: int) -> list[Passage] | None:
        """The passages a composed answer read (its composition's [{n, doc_id, heading}]), from the KB
        documents; None when one of them is no longer in the KB."""
        passages = []
        for item in sorted(stored or [], key=lambda p: p.get("n", 0)):
            doc = self.docs.get(item.get("doc_id"))
            if doc is None:
                return None
            heading, n = item.get("heading") or "", int(item.get("n") or len(passages) + 1)
            sections = self.sections.get(doc.id) or []
            section = next((s for s in sections if s.heading == heading), None)
            if section is None and heading:
                return None
            if section is None or (n == 1 and not heading):
                text = doc.answer if section is None or len(doc.answer.split()) <= section_max_words else section.text
            else:
                text = section.text
            passages.append(Passage(n, doc.id, doc.title, heading, doc.url, clip_words(text, section_words)))
        return passages or None


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall((text or "").lower()) if len(w) > 2 and w not in _OVERLAP_STOP}


# ----- KB-derived rows -------------------------------------------------------------------------------

def heading_question(title: str, heading: str) -> str:
    """A section's heading (or the article's title) as a question a customer might ask."""
    subject = (heading or title).strip().rstrip(".:")
    if subject.endswith("?"):
        return subject
    if len(subject) > 1 and subject[0].isupper() and subject[1].islower():
        subject = subject[0].lower() + subject[1:]
    return f"What should I know about {subject}?"


def _plain(markdown: str) -> str:
    """Markdown as sentences on one line: links to their text, no heading, quote or list markers
    (a list item without an end mark gets a full stop), no emphasis marks."""
    lines = []
    for line in re.sub(r"`{3,}[^\n]*", " ", markdown).splitlines():
        item = _LINE_MARKER.match(line)
        line = line[item.end():] if item else line
        line = line.strip()
        if item and line and line[-1] not in ".!?:":
            line += "."
        if line:
            lines.append(line)
    return plain_text(re.sub(r"(^|\s)>(\s)", r"\1›\2", " ".join(lines))).replace("›", ">")


def grounded_target(markdown: str, words: int) -> str:
    """The section's first sentences (about `words` words, at least one sentence), each cited [1]."""
    sentences = []
    for sentence in _SENTENCE.split(_plain(markdown)):
        sentence = _TRAILING_ENUMERATOR.sub("", sentence.strip())
        if not re.search(r"[A-Za-z]{2}", sentence):
            continue  # a lone list number or symbol
        sentences.append(sentence)
    out, n = [], 0
    for sentence in sentences:
        size = len(sentence.split())
        if out and n + size > words:
            break
        if not out and size > 2 * words:
            sentence = " ".join(sentence.split()[:words])
        out.append(_cite(sentence))
        n += size
    return " ".join(out)


def _cite(sentence: str) -> str:
    body = sentence.rstrip(" .!?:;,")
    end = sentence[len(body):].strip()
    end = end[-1] if end and end[-1] in ".!?" else "."
    return f"{body} [1]{end}"


def kb_rows(documents: list[Document], *, config, compose, section_max_words: int,
            exclude: set[str] | frozenset = frozenset(), index: SectionIndex | None = None,
            counts: Counter | None = None) -> list[ComposerRow]:
    """Question → grounded answer rows from the KB (see the module doc), at most `composer_kb_max`
    (a deterministic sample); held-out questions (`exclude`, normalised) are left out."""
    index = index or SectionIndex(documents)
    counts = counts if counts is not None else Counter()
    rows: list[ComposerRow] = []
    for doc in documents:
        sections = index.sections.get(doc.id) or []
        if not sections:
            continue
        asked: dict[str, list[str]] = defaultdict(list)
        for question in doc.questions:
            if normalize(question) in exclude:
                counts["kb_heldout_skipped"] += 1
                continue
            best = index.best_section(doc.id, question)
            asked[best.id].append(question)
        for section in sections:
            questions = asked.get(section.id) or [heading_question(doc.title, section.heading)]
            text = index.quoted(section, first=True, section_max_words=section_max_words)
            target = grounded_target(clip_words(text, compose.section_words), config.composer_target_words)
            if not target:
                continue
            for question in questions:
                passages = index.prompt_passages(question, section, section_words=compose.section_words,
                                                 section_max_words=section_max_words)
                if not check(target, passages, question).ok:
                    counts["kb_guard_rejected"] += 1  # e.g. a number split across the clipped text
                    continue
                rows.append(ComposerRow(question, passages, target, origin="kb"))
    counts["kb_rows_available"] += len(rows)
    if len(rows) > config.composer_kb_max:
        rows = sorted(rows, key=lambda r: stable_fraction(r.question + r.passages[0].doc_id, "composer-kb"))
        rows = rows[:config.composer_kb_max]
    return rows


def abstain_rows(questions: list[str], n: int, *, index: SectionIndex, compose, section_max_words: int,
                 exclude: set[str] | frozenset = frozenset()) -> list[ComposerRow]:
    """Off-topic questions with the sections closest to them → NO_ANSWER (`n` at most)."""
    chosen = sorted((q for q in questions if normalize(q) not in exclude),
                    key=lambda q: stable_fraction(q, "composer-abstain"))[:max(0, n)]
    return [ComposerRow(q, index.prompt_passages(q, None, section_words=compose.section_words,
                                                 section_max_words=section_max_words), ABSTAIN, origin="abstain")
            for q in chosen]


# ----- votes on composed answers -------------------------------------------------------------------

def build_composer_data(rows: list[dict], documents: list[Document], *, config, compose, section_max_words: int,
                        admin_hashes: set[str] | frozenset = frozenset(),
                        heldout_texts: set[str] | frozenset = frozenset(),
                        offtopic: list[str] | None = None) -> ComposerData:
    """Feedback rows (oldest first, `Store.feedback_since`) + the KB → the composer's rows."""
    counts: Counter = Counter()
    index = SectionIndex(documents)
    suspicious = suspicious_users(rows, config, admin_hashes)
    claims: dict[tuple[str, str], dict[str, tuple[str, bool, dict]]] = defaultdict(dict)
    for row in rows:
        composition = row.get("composition") or {}
        if row.get("answer_mode") != "compose" or composition.get("outcome") != "composed":
            continue
        if row.get("vote") not in ("up", "down"):
            continue
        counts["composed_votes"] += 1
        user = row.get("user_hash") or ANONYMOUS
        question, answer = (row.get("question") or "").strip(), (row.get("answer_text") or "").strip()
        if user in suspicious:
            counts["suspicious_votes"] += 1
            continue
        if not question or not answer:
            counts["skipped_empty"] += 1
            continue
        if row.get("used_context"):
            counts["skipped_followup"] += 1
            continue
        if normalize(question) in heldout_texts:
            counts["skipped_heldout"] += 1
            continue
        claims[(normalize(question), normalize(answer))][user] = (row["vote"], user in admin_hashes, row)

    counts["composed_answers"] = len(claims)
    desirable, undesirable = [], []
    for by_user in claims.values():
        trusted = {u: c for u, c in by_user.items() if c[1]}
        voters = trusted or by_user  # admins outrank everyone else on an answer they voted on
        up = {u for u, c in voters.items() if c[0] == "up"}
        down = {u for u, c in voters.items() if c[0] == "down"}
        if len(up) == len(down):
            counts["conflicts_dropped"] += 1
            continue
        good = len(up) > len(down)
        latest = max((c[2] for c in by_user.values()), key=lambda r: (r.get("time") or "", r.get("feedback_id") or 0))
        passages = index.rebuild((latest.get("composition") or {}).get("passages") or [],
                                 section_words=compose.section_words, section_max_words=section_max_words)
        if passages is None:
            counts["passages_missing"] += 1
            continue
        question, answer = latest["question"].strip(), latest["answer_text"].strip()
        if good and config.composer_guard_targets and not check(answer, passages, question).ok:
            counts["guard_rejected"] += 1
            continue
        row = ComposerRow(question, passages, answer, desirable=good, origin="thumbs_up" if good else "thumbs_down",
                          users=tuple(sorted(up if good else down)), trusted=bool(trusted))
        (desirable if good else undesirable).append(row)
    desirable = cap_per_user(desirable, config, counts, "capped_up")
    undesirable = cap_per_user(undesirable, config, counts, "capped_down")

    kb = kb_rows(documents, config=config, compose=compose, section_max_words=section_max_words,
                 exclude=heldout_texts, index=index, counts=counts)
    if offtopic is None:
        from training.build import offtopic_questions

        offtopic = offtopic_questions()
    n_abstain = round(config.composer_abstain_share * len(kb)) if kb else 0
    if config.composer_abstain_share > 0 and kb:
        n_abstain = max(1, n_abstain)
    abstain = abstain_rows(offtopic, n_abstain, index=index, compose=compose, section_max_words=section_max_words,
                           exclude=heldout_texts)
    # KTO learns from the votes; KB rows join as desirable only to balance a surplus of 👎.
    balance = sorted(kb, key=lambda r: stable_fraction(r.question, "composer-kto"))[
        :max(0, len(undesirable) - len(desirable))] if undesirable else []
    data = ComposerData(sft=desirable + kb + abstain, kto=(desirable + undesirable + balance) if undesirable else [])
    counts.update({"sft_feedback": len(desirable), "kto_desirable": len(desirable) + len(balance),
                   "kto_undesirable": len(undesirable), "kb_rows": len(kb), "abstain_rows": len(abstain),
                   "sft_rows": len(data.sft), "kto_rows": len(data.kto)})
    data.counts = dict(sorted(counts.items()))
    return data
