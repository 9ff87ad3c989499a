"""Simulated feedback on the demo KB for benchmarks/gpu_check.sh: N questions (the KB's example
questions, repeated with light rewordings) are asked through the engine and stored, and simulated agents
vote through `bench_helpcentre.simulate_votes` (👍 when right; 👎 + the right article on some wrong
ones). Writes the votes file and prints one JSON line: its path and the vote counts.

    python benchmarks/gpu_check_feedback.py HOME [--events 1000] [--seed 3]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_helpcentre import simulate_votes  # noqa: E402

WRAPPERS = ["{q}", "hi, {q}", "{q} please", "quick question: {q}", "{q}?", "hello! {q} thanks", "{q} asap"]


def traffic(n: int, seed: int) -> tuple[list[tuple[str, str]], list[str]]:
    """n (question, gold article id) pairs from the demo KB's example questions; the article ids."""
    from retrieval.kb import load_documents

    docs = load_documents([REPO / "demo" / "kb"])
    pairs = [(q, d.id) for d in docs for q in d.questions]
    if not pairs:
        raise SystemExit("the demo KB has no example questions")
    rng = random.Random(seed)
    out = [(rng.choice(WRAPPERS).format(q=q.rstrip("?")), gold) for q, gold in (rng.choice(pairs) for _ in range(n))]
    return out, sorted({d.id for d in docs})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("home", type=Path)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    rows, doc_ids = traffic(args.events, args.seed)
    path, counts = simulate_votes(args.home, rows, doc_ids, adversarial=False, seed=args.seed)
    print(json.dumps({"votes": str(path), "counts": counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
