"""Whose product a question is about: questions that name another product are declined, not answered
from the nearest article.

A question on a topic the help centre covers but about another product ("what is the Notion API rate
limit", "SAML SSO in Salesforce") sits as close to our articles as our own customers' questions, so no
similarity bound separates them without declining our own. What does separate them is a name the help
centre never mentions:

* a known peer product or company (retrieval/assets/product_names.txt: other SaaS tools,
  marketplaces, delivery and travel apps, social networks; any case, multi-word names too), or
* a capitalised word the help centre never uses, directly followed by a word that only software has
  ("Foobar API", "Foobar integration", "Foobar workspace").

A question that also names the help centre's own product (a capitalised word that at least a quarter
of the articles use, such as "Tandem" in Tandem's help centre) is ours whatever else it names: "the
federation metadata from Azure for Tandem". Names the help centre itself uses are ours (an article on the Salesforce integration makes
"Salesforce" a word of ours). What customers use *with* any product (their email provider, bank,
card, carrier, phone, browser) is not on the list, and a capitalised word alone (a person, a city, a
weekday) is never taken for a product: "Sarah said I could get a refund" and "do you ship to Canada"
stay ours.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

NAMES_FILE = Path(__file__).resolve().parent / "assets" / "product_names.txt"
# Words that follow a product's name only when the product is software.
SOFTWARE_NOUNS = frozenset({"api", "apis", "sdk", "integration", "integrations", "workspace", "workspaces", "plugin",
                            "plugins", "extension", "webhook", "webhooks", "dashboard", "app's", "admin", "console"})
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9&+'’.-]*[A-Za-z0-9+]|[A-Za-z0-9]")
_LONGEST_NAME_WORDS = 3
OWN_NAME_SHARE = 0.25  # a capitalised word in this share of the articles names the product itself
OWN_NAME_CASE_SHARE = 0.8  # ... when at least this share of its occurrences are capitalised


def words(text: str) -> list[str]:
    return [w.rstrip(".") for w in _WORD.findall(text)]


def _bare(word: str) -> str:
    """Lower case, without a possessive or a plan's "+" ("Instacart+'s" -> "instacart")."""
    word = word.lower().replace("’", "'")
    word = word[:-2] if word.endswith("'s") else word
    return word.rstrip("+") or word


_SENTENCE_START = re.compile(r"(^|[.!?:;|*#>\n-]\s*|\d+\.\s+)$")


def _mid_sentence_capitalised(text: str) -> list[str]:
    """Capitalised words (not all capitals) that do not start a sentence, a heading or a list item, each
    time they occur."""
    found = []
    for match in _WORD.finditer(text):
        word = match.group(0)
        if word[:1].isupper() and not word.isupper() and len(word) > 2:
            before = text[max(0, match.start() - 4):match.start()]
            if not _SENTENCE_START.search(before) and match.start() > 0:
                found.append(_bare(word.rstrip(".")))
    return found


def load_names(path: Path = NAMES_FILE, extra: Iterable[str] = ()) -> frozenset[str]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")]
    return frozenset(" ".join(_bare(w) for w in words(name)) for name in [*lines, *extra] if words(name))


class Scope:
    """The help centre's own vocabulary, and the other products a question names."""

    def __init__(self, kb_texts: Iterable[str], names: frozenset[str] | None = None):
        """`kb_texts`: one text per article (its title and body)."""
        vocabulary: set[str] = set()
        phrases: set[str] = set()
        capitalised: Counter[str] = Counter()  # articles that capitalise the word inside a sentence
        as_name: Counter[str] = Counter()  # times it is written so
        in_lower: Counter[str] = Counter()  # times it is written in lower case
        n_texts = 0
        for text in kb_texts:
            n_texts += 1
            raw = words(text)
            tokens = [_bare(w) for w in raw]
            vocabulary.update(tokens)
            in_lower.update(t for w, t in zip(raw, tokens) if w[:1].islower())
            for n in range(2, _LONGEST_NAME_WORDS + 1):
                phrases.update(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
            written = _mid_sentence_capitalised(text)
            as_name.update(written)
            capitalised.update(set(written))
        self.vocabulary = frozenset(vocabulary)
        # Words capitalised inside sentences in many articles, and nearly always written so: the product's
        # (and its plans') names. A menu label ("Settings › Billing") or a capitalised pronoun is also
        # written in lower case in the text ("billing email", "you"), so it names nothing of ours, and a
        # question that uses it is not ours for that reason alone.
        self.own_names = frozenset(
            t for t, n in capitalised.items()
            if n >= max(2, OWN_NAME_SHARE * n_texts) and t not in ENGLISH_STOP_WORDS
            and in_lower[t] <= (1 - OWN_NAME_CASE_SHARE) * (as_name[t] + in_lower[t]))
        all_names = load_names() if names is None else names
        # A listed name the help centre mentions is one of ours.
        self.names = frozenset(n for n in all_names if n not in vocabulary and n not in phrases)

    def other_products(self, question: str) -> list[str]:
        """The other products `question` names, in order of appearance (none: [])."""
        raw = words(question)
        tokens = [_bare(w) for w in raw]
        if self.own_names.intersection(tokens):
            return []
        found: list[str] = []
        i = 0
        while i < len(tokens):
            hit = None
            for n in range(_LONGEST_NAME_WORDS, 0, -1):
                phrase = " ".join(tokens[i:i + n])
                if len(tokens[i:i + n]) == n and phrase in self.names:
                    hit = (phrase, n)
                    break
            if hit is None and self._unknown_software(raw, tokens, i):
                hit = (raw[i], 1)
            if hit:
                if hit[0] not in found:
                    found.append(hit[0])
                i += hit[1]
            else:
                i += 1
        return found

    def _unknown_software(self, raw: list[str], tokens: list[str], i: int) -> bool:
        word = raw[i]
        if not word[:1].isupper() or tokens[i] in self.vocabulary or word.isupper() or i + 1 >= len(tokens):
            return False
        return tokens[i + 1] in SOFTWARE_NOUNS
