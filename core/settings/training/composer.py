"""`retrain_composer*`: the composer's nightly training and gate (training/compose_data.py,
compose_train.py, compose_gate.py; docs/retrain.md)."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings.general import outside_unit_interval


@dataclass
class RetrainComposerSettings:
    """Part of `RetrainSettings`: whether the composer trains, how (SFT, then KTO, on a LoRA adapter)
    and how its gate judges it."""

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

    def problems(self) -> list[str]:
        problems = []
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
        return problems + outside_unit_interval(self, "composer_abstain_share")
