"""Serving settings: the knowledge base, its index and how answers are made (general fields, no prefix)."""

from __future__ import annotations

from dataclasses import dataclass

# How answers are made (`answer_mode`, `slack_answer_modes`, `csbot ask/chat --mode`): the one spelling.
ANSWER_MODES = ("select", "compose", "auto")


@dataclass
class ServingSettings:
    """General fields of `Settings` read when ingesting and answering."""

    # Below this confidence the engine declines and hands off. None: the value tuned for the
    # model version (see models/intent.py), which defaults to DEFAULT_OOS_THRESHOLD.
    confidence_threshold: float | None = None
    # Words per knowledge-base chunk for long articles.
    chunk_words: int = 120
    # Largest article `csbot ingest` accepts, in bytes: a Markdown/text file, an HTML page's article
    # text, a CSV/JSONL row (0: no limit). Help-centre articles are well under 1 MB; a 2 MB one is
    # already ~3,000 chunks to encode (docs/knowledge-base.md).
    max_article_bytes: int = 2_000_000
    # Index type: "auto" (exact search below hnsw_min_vectors, HNSW above), "flat", "hnsw", "ivf".
    index_type: str = "auto"
    hnsw_min_vectors: int = 50_000
    # How many sources an answer lists at most (also retrieval/ranking.py DecisionParams' default).
    max_sources: int = 3
    # An answer quotes the matching section of an article; a section longer than this many words is
    # quoted from its best-matching part (about chunk_words words).
    section_max_words: int = 250
    # When the best two articles' retrieval cosines are closer than this, the bot asks which one was
    # meant (0 = never ask; also retrieval/ranking.py DecisionParams' default).
    clarify_margin: float = 0.02
    # Follow-ups of at most this many words are read together with the thread's earlier turn.
    followup_max_words: int = 6
    # Negative probability at which a support-channel message gets a priority hand-off (> 1: off).
    priority_negative_threshold: float = 0.85
    # How answers are made: "select" (the chosen article section, as the KB has it), "compose" (a
    # language model writes the answer from the best sections, cited, guarded; the select answer when
    # it abstains, fails the guard or runs out of time), "auto" (compose when the served version has a
    # composer the retrain's gate approved, else select). `csbot ask --mode`; per channel in Slack
    # with slack_answer_modes.
    answer_mode: str = "select"
    # Questions naming another product the KB never mentions are declined (retrieval/scope.py): the
    # built-in list of peer products plus these names (comma-separated); decline_other_products = false
    # turns the check off.
    decline_other_products: bool = True
    other_products: str = ""

    def problems(self) -> list[str]:
        problems = []
        if self.answer_mode not in ANSWER_MODES:
            problems.append(f"answer_mode must be one of {', '.join(ANSWER_MODES)}, not {self.answer_mode!r}")
        if self.max_article_bytes < 0:
            problems.append("max_article_bytes must be 0 (no limit) or more")
        return problems
