"""Composed answers: the prompt, the citations, the guard and the budgets around a language model.

The engine picks the article section as in select mode (retrieval/ranking.py); only when it found
one (no hand-off, no clarifying question) does a composer write the answer. The prompt holds the best
sections, numbered, with their titles, and the thread's earlier turns; the model is told to answer
only from them, to cite them as [1], [2] and to reply NO_ANSWER when they do not answer the question.

Before anything is shown the guard checks the text (`check`): every number, price, URL, e-mail
address and name-like word must appear in the sections it cites (or the question); a citation must
name a section the model was given; most of the answer's words must come from the sections. A
composed answer that fails the guard, abstains, or runs past its time budget is replaced by the
select-mode answer (abstaining means a hand-off). The budgets are deadlines: the fallback comes when
one expires, not when the late token does, and the generation is stopped. When streamed
(`Composition.pieces`), text is released a sentence at a time, each sentence checked first, so an
unsupported fact is never posted: the stream stops there and the front end shows the select answer
instead.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Generator

from core.settings import ComposeSettings
from models.cancel import Cancel
from models.composer import ChatModel

log = logging.getLogger("csbot.compose")
ABSTAIN = "NO_ANSWER"
SYSTEM_PROMPT = (
    "You are a customer-support assistant. Answer the customer's question using only the numbered "
    "help-centre sections below, in one to four sentences. After each fact, cite the section it comes "
    f"from like [1]. If the sections do not answer the question, reply exactly {ABSTAIN}.")
# Where a small model starts to write the next turn itself: generation stops there.
STOP = ["\nCustomer", "Customer's question", "Help-centre sections", "\n\n\n"]
MIN_SUPPORT = 0.6  # share of the answer's content words that must occur in the sections

# A URL, or a bare domain ("parcelly.example.com", "help.example/refunds").
_URL = re.compile(r"(?:https?://|www\.)[^\s<>()\[\]]+|\b(?:[a-z0-9-]+\.)+[a-z]{2,}(?:/[^\s<>()\[\]]*)?", re.I)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_NUMBER = re.compile(r"(?<![\w\[])[$€£]?\d+(?:[.,:/-]\d+)*%?")
_CITATION = re.compile(r"\[(\d{1,2})\]")
_ENUMERATOR = re.compile(r"^\s*\d{1,2}[.)](?=\s)", re.M)  # "1. Open Settings": a list item, not a fact
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'’-]*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_STOP = set("""a an the and or but if then so to of in on at by for with from as is are was were be been being it its
this that these those you your yours we our us they them their i me my he she his her can could will would should
may might must do does did done have has had not no yes any all some more most less than there here what which who
whom when where why how also just only very too both each about into out up down over under again once please go get got
make made use used using set see click select choose open tap press""".split())


@dataclass(frozen=True)
class Passage:
    """One section in the prompt; `n` is its citation number."""

    n: int
    doc_id: str
    title: str
    heading: str
    url: str | None
    text: str

    def header(self) -> str:
        return self.title + (f" › {self.heading}" if self.heading and self.heading != self.title else "")


@dataclass
class GuardResult:
    ok: bool
    problems: list[str] = field(default_factory=list)
    cited: list[int] = field(default_factory=list)
    citations_added: bool = False
    support: float = 1.0

    def to_dict(self) -> dict:
        return {"ok": self.ok, "problems": self.problems, "cited": self.cited,
                "citations_added": self.citations_added, "support": round(self.support, 3)}


@dataclass
class Composition:
    """The outcome of one composition. `outcome`: "composed" (the text is the answer), "abstained"
    (the model said the sections do not answer: hand off), "fallback" (guard, budget or error: the
    select answer serves; `reason` says which)."""

    outcome: str
    text: str = ""
    reason: str = ""
    guard: GuardResult | None = None
    first_token_seconds: float | None = None
    seconds: float = 0.0
    pieces: int = 0
    model: str = ""

    def to_dict(self) -> dict:
        draft = {"draft": self.text[:2000]} if self.outcome != "composed" else {}  # what was not shown
        return {"outcome": self.outcome, "reason": self.reason, "model": self.model, **draft,
                "guard": self.guard.to_dict() if self.guard else None,
                "first_token_seconds": None if self.first_token_seconds is None else round(self.first_token_seconds, 3),
                "seconds": round(self.seconds, 3), "pieces": self.pieces}


class GuardFailure(Exception):
    """Raised inside `Composer.stream` when a sentence fails the guard or a budget runs out; the
    front end replaces what it showed with the select-mode answer."""

    def __init__(self, composition: Composition):
        super().__init__(composition.reason)
        self.composition = composition


def clip_words(text: str, limit: int) -> str:
    words = text.split()
    return text if len(words) <= limit else " ".join(words[:limit]) + " …"


def build_messages(question: str, passages: list[Passage], turns: list[str] | None = None) -> list[dict]:
    """The chat prompt: instructions, the numbered sections, the thread's earlier turns, the question."""
    blocks = "\n\n".join(f"[{p.n}] {p.header()}\n{p.text.strip()}" for p in passages)
    earlier = [t.strip() for t in (turns or []) if t and t.strip()]
    thread = ("Earlier in this conversation the customer said:\n" + "\n".join(f"- {t}" for t in earlier) + "\n\n"
              if earlier else "")
    user = f"Help-centre sections:\n\n{blocks}\n\n{thread}Customer's question: {question.strip()}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


# ----- the guard -------------------------------------------------------------------------------------
def _norm_number(token: str) -> str:
    return token.strip("$€£%").replace(",", "")


def _facts(text: str) -> dict[str, list[str]]:
    body = _ENUMERATOR.sub(" ", _CITATION.sub(" ", text))
    urls = [u.rstrip(".,;:!?\"'`*_") for u in _URL.findall(body)]  # "see https://x.example/a" quoted
    emails = _EMAIL.findall(body)
    rest = _EMAIL.sub(" ", _URL.sub(" ", body))
    numbers = [n for n in _NUMBER.findall(rest) if any(c.isdigit() for c in n)]
    names = []
    for sentence in re.split(r"(?<=[.!?:])\s+|\n+", rest):
        words = _WORD.findall(sentence)
        for i, word in enumerate(words):
            inner_caps = any(c.isupper() for c in word[1:]) and not word.isupper()
            if (i > 0 and word[0].isupper() and word.lower() not in _STOP and word != "I") or inner_caps or (
                    len(word) > 1 and word.isupper() and word != ABSTAIN):
                names.append(word)
    return {"url": urls, "email": emails, "number": numbers, "name": names}


def _haystack(texts: list[str]) -> tuple[str, set[str], set[str]]:
    joined = "\n".join(texts)
    low = joined.lower()
    numbers = {_norm_number(n) for n in _NUMBER.findall(_URL.sub(" ", joined))}
    words = {w.lower() for w in _WORD.findall(joined)}
    return low, numbers, words


def _stem(word: str) -> str:
    """A crude stem, enough to match "refunded" with "refunds" and "charges" with "charged"."""
    word = word.lower().replace("’", "'")
    for suffix in ("'s", "ing", "ed", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _content_words(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(_CITATION.sub(" ", text)) if w.lower() not in _STOP and len(w) > 2]


def _unsupported(text: str, sources: list[str]) -> list[str]:
    low, numbers, words = _haystack(sources)
    problems = []
    facts = _facts(text)
    problems += [f"URL {u} is not in the sections" for u in facts["url"] if u.lower() not in low]
    problems += [f"e-mail {e} is not in the sections" for e in facts["email"] if e.lower() not in low]
    problems += [f"number {n} is not in the sections" for n in facts["number"] if _norm_number(n) not in numbers]
    problems += [f"name {w} is not in the sections" for w in facts["name"] if w.lower() not in words]
    return problems


def support(text: str, passages: list[Passage], question: str = "") -> float:
    """Share of the answer's content words that occur in the sections (or the question)."""
    words = _content_words(text)
    if not words:
        return 0.0
    known = {_stem(w) for p in passages for w in _WORD.findall(p.header() + " " + p.text)}
    known |= {_stem(w) for w in _WORD.findall(question)}
    return sum(w in known for w in words) / len(words)


def citations(text: str, passages: list[Passage]) -> tuple[list[int], list[int]]:
    """(valid citation numbers in order of first use, invalid ones)."""
    valid, invalid = [], []
    known = {p.n for p in passages}
    for match in _CITATION.finditer(text):
        n = int(match.group(1))
        target = valid if n in known else invalid
        if n not in target:
            target.append(n)
    return valid, invalid


def best_passage(text: str, passages: list[Passage]) -> int:
    words = set(_content_words(text))
    scored = [(len(words & set(_content_words(p.header() + " " + p.text))), -p.n, p.n) for p in passages]
    return max(scored)[2]


def check(text: str, passages: list[Passage], question: str = "") -> GuardResult:
    """The guard over a whole answer (see the module doc)."""
    if not text.strip():
        return GuardResult(False, ["the answer is empty"])
    cited, invalid = citations(text, passages)
    added = False
    if not cited:
        cited, added = [best_passage(text, passages)], True
    by_n = {p.n: p for p in passages}
    sources = [by_n[n].header() + "\n" + by_n[n].text for n in cited] + [question]
    problems = [f"cites [{n}], which it was not given" for n in invalid]
    problems += _unsupported(text, sources)
    share = support(text, passages, question)
    if share < MIN_SUPPORT:
        problems.append(f"only {share:.0%} of its words come from the sections")
    return GuardResult(not problems, problems, cited, added, share)


def abstains(text: str) -> bool:
    return ABSTAIN in text.upper().replace(" ", "_") or not _WORD.search(text)


# ----- the policy ------------------------------------------------------------------------------------
class Composer:
    """A backend plus the policy: build the prompt, generate within the budgets, guard the text."""

    def __init__(self, model: ChatModel, settings: ComposeSettings):
        self.model = model
        self.settings = settings

    def compose(self, question: str, passages: list[Passage], turns: list[str] | None = None) -> Composition:
        """The whole composition (for the CLI, evaluation and a post that is not streamed)."""
        pieces = self.stream(question, passages, turns, sentence_guard=False)
        try:
            while True:
                next(pieces)
        except StopIteration as stop:
            return stop.value
        except GuardFailure as failure:
            return failure.composition

    def stream(self, question: str, passages: list[Passage], turns: list[str] | None = None, *,
               sentence_guard: bool = True):
        """Yield the answer's text in checked sentences; return (StopIteration.value) the Composition.
        Raises GuardFailure when a sentence fails the guard or a budget runs out (nothing unchecked
        has been yielded by then). The budgets are deadlines: the backend's pieces are read on a
        thread of their own (`_Feed`), and at a deadline the wait ends, the generation is told to
        stop, and the fallback is raised at once."""
        cfg = self.settings
        started = time.monotonic()
        result = Composition("composed", model=self.model.name)
        if not passages:
            result.outcome, result.reason = "fallback", "no section to compose from"
            return result
        text, released = "", 0
        haystack = [p.header() + "\n" + p.text for p in passages] + [question]
        feed = _Feed(self.model, build_messages(question, passages, turns), max_new_tokens=cfg.max_new_tokens,
                     temperature=cfg.temperature, stop=STOP)
        try:
            while (piece := feed.next(*_deadline(cfg, started, result.first_token_seconds))) is not _END:
                if result.first_token_seconds is None:
                    result.first_token_seconds = time.monotonic() - started
                text += piece
                result.pieces += 1
                if not sentence_guard or abstains(text[:len(ABSTAIN) + 2]) or ABSTAIN in text:
                    continue
                ready = _complete_sentences(text, released)
                if ready:
                    problems = ([f"cites [{n}], which it was not given" for n in citations(ready, passages)[1]]
                                + _unsupported(ready, haystack)) if cfg.guard else []
                    if problems:
                        result.text = text
                        raise GuardFailure(_fallback(result, "guard: " + problems[0], started))
                    released += len(ready)
                    yield ready
        except _Budget as exc:
            result.text = text
            raise GuardFailure(_fallback(result, str(exc), started)) from None
        except GuardFailure:
            raise
        except Exception as exc:  # noqa: BLE001 - a backend error (a dead endpoint) falls back to select
            result.text = text
            failed = _fallback(result, f"composer error: {type(exc).__name__}: {exc}"[:300], started)
            if released:
                raise GuardFailure(failed) from None
            return failed
        finally:
            feed.stop()  # a deadline, the guard, or a caller that stopped reading: the generation ends too
        whole = text
        result.text = text.strip()
        result.seconds = time.monotonic() - started
        if abstains(result.text):
            result.outcome, result.reason = "abstained", "the sections do not answer the question"
            if released:
                raise GuardFailure(result)
            return result
        result.guard = check(result.text, passages, question)
        if cfg.guard and not result.guard.ok:
            failed = _fallback(result, "guard: " + result.guard.problems[0], started)
            if released:
                raise GuardFailure(failed)
            return failed
        rest = whole[released:]
        if rest.strip():
            yield rest
        return result


class _Budget(Exception):
    pass


_END = object()  # the backend's reply is complete


def _deadline(cfg: ComposeSettings, started: float, first: float | None) -> tuple[float, str]:
    """When the next piece is due (time.monotonic()) and what to say when it is not there by then: the
    first token's budget until it came, the whole answer's (`latency_budget_seconds`) throughout."""
    first_budget, latency_budget = cfg.first_token_budget_seconds, cfg.latency_budget_seconds
    if first is None and first_budget <= latency_budget:
        return started + first_budget, f"first token not within {first_budget:g}s budget"
    return started + latency_budget, f"still writing after the {latency_budget:g}s budget"


class _Feed:
    """A backend's pieces, read on a thread of their own into a queue, so that the composer waits for
    each only until its deadline. `stop()` tells the generation to end: every backend's `stream`
    takes `cancel` (models/composer.py `ChatModel`, `Cancel`) and stops at once (llama.cpp aborts
    even while it reads the prompt, an endpoint's connection is cut) or at its next token
    (transformers); no further piece is read, and the generator is closed.

    The thread is not a daemon: a process that ends right after the fallback (`csbot ask`) waits for
    the stopped generation to return rather than kill it inside torch or llama.cpp, which aborted
    the interpreter ("terminate called without an active exception")."""

    def __init__(self, model: ChatModel, messages: list[dict], **kwargs):
        self.cancel = Cancel()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, args=(model, messages, kwargs), name="csbot-compose",
                                       daemon=False)
        self.thread.start()

    def _run(self, model: ChatModel, messages: list[dict], kwargs: dict) -> None:
        pieces: Generator[str, None, None] | None = None
        try:
            pieces = model.stream(messages, cancel=self.cancel, **kwargs)
            for piece in pieces:
                if self.cancel.is_set():
                    break
                self._queue.put(piece)
            self._queue.put(_END)
        except BaseException as exc:  # noqa: BLE001 - raised in the composer's thread by `next`
            self._queue.put(exc)
        finally:
            try:
                if pieces is not None:
                    pieces.close()  # the backend's own clean-up: its HTTP response closed, its generate thread joined
            except Exception as exc:  # noqa: BLE001 - the answer went out already; only worth a line
                log.info("closing the composer's stream: %s: %s", type(exc).__name__, exc)

    def next(self, deadline: float, reason: str):
        """The next piece, or _END; raises the backend's error, or _Budget(reason) at `deadline`."""
        left = deadline - time.monotonic()
        if left <= 0:  # strict: a piece that is ready but late does not count
            raise _Budget(reason)
        try:
            item = self._queue.get(timeout=left)
        except queue.Empty:
            raise _Budget(reason) from None
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        self.cancel.set()


def _fallback(result: Composition, reason: str, started: float) -> Composition:
    result.outcome, result.reason = "fallback", reason
    result.seconds = time.monotonic() - started
    return result


def _complete_sentences(text: str, released: int) -> str:
    """The text after `released` up to the last sentence end (with its trailing space), or ""."""
    tail = text[released:]
    ends = [m.end() for m in _SENTENCE_END.finditer(tail)]
    return tail[:ends[-1]] if ends else ""
