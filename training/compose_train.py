"""The composer's nightly stage: plan, SFT then KTO with TRL on a LoRA adapter (peft), the gate.

    plan_composer(...)   whether this run trains the composer, and why (also in `--dry-run`)
    run_composer(...)    train (train_composer), score current vs retrained (training/compose_gate.py),
                         and say what the new version carries: an adapter folder + meta["composer"]

Training (`train_composer`), from the compose model (`compose_model`, the builtin SmolLM2 converted
once under $CSBOT_HOME/base_models) — or from the champion's adapter, trained further, when
`composer_start_from = champion` and it has one on the same model — on CUDA when present (bf16),
else on CPU (float32):

1. **SFT** (`trl.SFTTrainer`) on conversational prompt-completion rows (training/compose_data.py:
   👍'd composed answers, KB rows, abstention rows); the loss is on the answer only.
2. **KTO** (`trl.KTOTrainer`, stable in TRL ≥ 1.0) on unpaired rows: 👍 desirable, 👎 undesirable.
   Its reference is the adapter as SFT left it (TRL copies it into a frozen "ref" adapter), so KTO
   moves the composer away from what users 👎'd relative to where SFT brought it. It runs only when
   there is at least one 👎'd composed answer; its KL term pairs rows within a batch, so batches
   hold at least 2 rows.

Steps per stage: `composer_epochs` passes over its rows, at most `composer_max_steps`. Rows longer
than `composer_max_length` tokens are left out (counted). The adapter alone is saved (peft format);
serving merges it into the compose model (models/composer.py TransformersChat).

What a version carries (`ComposerOutcome`): the retrained adapter and its verdict when the gate
approves it; otherwise the champion's adapter and verdict (`carried_from`), with this run's
rejected verdict under "last_run" — a version only ever holds an approved adapter, so
`answer_mode = auto` composes with what the gate approved and `compose` never serves a rejected one.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.settings import SEED, GeneralSettings

log = logging.getLogger("csbot.retrain")

LORA_TARGETS = "all-linear"  # every linear layer of the transformer blocks (peft leaves the LM head out)


@dataclass
class ComposerOutcome:
    """What the new version gets: `adapter` (a folder to copy, or None) and `meta` (meta["composer"],
    or None for none); `report` goes into the retrain's report under "composer"."""

    status: str  # approved | rejected | skipped | error
    adapter: Path | None = None
    meta: dict | None = None
    report: dict = field(default_factory=dict)


# ----- the plan ----------------------------------------------------------------------------------

def usable_adapter(settings, version) -> Path | None:
    """The version's composer adapter when it was trained on the configured compose model."""
    folder = version.composer_dir
    if folder is None:
        return None
    base = version.composer.get("base_model")
    return folder if base in (None, settings.compose.model) else None


def plan_composer(settings, config, champion, data, documents) -> dict:
    """{"train": bool, "reason": ..., rows, start}: whether this run trains the composer."""
    from training.build import kb_hash

    compose = settings.compose
    start = ("the champion's adapter" if config.composer_start_from == "champion" and usable_adapter(settings, champion)
             else f"the base model {compose.model}")
    plan = {"train": False, "setting": config.composer, "answer_mode": settings.answer_mode, "model": compose.model,
            "start_from": start, "rows": {k: data.counts.get(k, 0) for k in (
                "composed_votes", "sft_feedback", "kto_undesirable", "kb_rows", "abstain_rows", "sft_rows", "kto_rows")}}

    def no(reason: str) -> dict:
        return {**plan, "reason": reason}

    if config.composer == "off":
        return no("retrain_composer is off")
    if compose.backend == "openai":
        return no(f"the composer is an OpenAI-compatible endpoint ({compose.model}): it is trained where it is served")
    if compose.model.lower().endswith(".gguf"):
        return no("compose_model is a GGUF file, which cannot be fine-tuned: name a model folder, a hub name or a builtin")
    if not data.sft:
        return no("no training rows: no KB section gave a question and no composed answer was 👍'd")
    if config.composer == "on":
        return {**plan, "train": True, "reason": "retrain_composer is on"}
    if settings.answer_mode == "select" and not data.n_votes:
        return no("answer_mode is select and no composed answer was voted on (retrain_composer = on trains anyway)")
    verdict = champion.composer
    same_kb = kb_hash(documents) in (verdict.get("kb_hash"), (verdict.get("last_run") or {}).get("kb_hash"))
    if verdict and not data.n_feedback and same_kb and verdict.get("base_model") == compose.model:
        return no(f"nothing new for the composer since {champion.name}'s was judged: no votes on composed answers "
                  "to learn from, the same KB")
    why = ("no composer verdict yet" if not verdict else
           f"{data.n_feedback} rows from votes on composed answers" if data.n_feedback else "the KB changed")
    return {**plan, "train": True, "reason": why}


# ----- training ----------------------------------------------------------------------------------

def _steps(n_rows: int, config) -> int:
    steps = max(1, math.ceil(config.composer_epochs * math.ceil(n_rows / config.composer_batch_size)))
    return min(steps, config.composer_max_steps) if config.composer_max_steps > 0 else steps


def _precision(device: str) -> tuple:
    import torch

    if device.startswith("cuda"):
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, True
        return torch.float32, False
    return torch.float32, False


def _common_args(config, device: str, out: Path, steps: int, *, seed: int, bf16: bool, batch_size: int) -> dict:
    progress = config.progress == "on"
    return dict(output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch_size,
                gradient_accumulation_steps=1, lr_scheduler_type="linear", warmup_steps=max(0, steps // 10),
                logging_steps=max(1, steps // 10), save_strategy="no", report_to="none", use_cpu=device == "cpu",
                bf16=bf16, fp16=False, gradient_checkpointing=False, max_length=config.composer_max_length,
                seed=seed, data_seed=seed, dataloader_num_workers=0, disable_tqdm=not progress)


def _quiet(trainer) -> None:
    """No per-step dicts printed on stdout (`--json` keeps stdout for the result)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def _losses(trainer, key: str = "loss") -> dict:
    history = [h[key] for h in trainer.state.log_history if key in h]
    return {"first_loss": round(history[0], 4) if history else None, "last_loss": round(history[-1], 4) if history else None}


def _fits(tokenizer, rows: list[dict], max_length: int) -> tuple[list[dict], int]:
    kept = []
    for row in rows:
        # return_dict pinned: transformers 5 returns a BatchEncoding by default where 4 returned the ids.
        encoded = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=True)
        ids = encoded["input_ids"]
        if len(ids) <= max_length:
            kept.append(row)
    return kept, len(rows) - len(kept)


def train_composer(base_path: str, sft_rows: list[dict], kto_rows: list[dict], out_dir: Path, config, *,
                   device: str = GeneralSettings.device, start_adapter: Path | None = None,
                   seed: int = SEED) -> dict:
    """SFT then KTO on a LoRA adapter (see the module doc); the adapter is saved to `out_dir`.
    Rows are `ComposerRow.sft()` / `.kto()` dicts. Returns a summary (steps, losses, seconds)."""
    from models.loading import pick_device, quiet_transformers

    quiet_transformers()
    if config.progress != "on":
        import datasets

        datasets.disable_progress_bars()
    started = time.perf_counter()
    device = pick_device(device)
    with cpu_threads(config.composer_threads if device == "cpu" else 0):
        return _train(base_path, sft_rows, kto_rows, Path(out_dir), config, device=device, start_adapter=start_adapter,
                      seed=seed, started=started)


@contextlib.contextmanager
def cpu_threads(n: int):
    """Torch's intra-op threads set to `n` (0: unchanged) for a block, then put back."""
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n > 0:
            torch.set_num_threads(before)


def _train(base_path, sft_rows, kto_rows, out_dir: Path, config, *, device, start_adapter, seed, started) -> dict:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models.composer_gguf import export_lora_gguf

    dtype, bf16 = _precision(device)
    work = out_dir.parent / f".{out_dir.name}-trainer"
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    if start_adapter is not None:
        model = PeftModel.from_pretrained(model, str(start_adapter), is_trainable=True)
    else:
        model = get_peft_model(model, LoraConfig(r=config.composer_lora_r, lora_alpha=config.composer_lora_alpha,
                                                 lora_dropout=config.composer_lora_dropout, target_modules=LORA_TARGETS,
                                                 task_type="CAUSAL_LM"))
    summary: dict = {"device": device, "dtype": str(dtype).replace("torch.", ""), "base": str(base_path),
                     "start_adapter": str(start_adapter) if start_adapter else None,
                     "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    stage_args = dict(device=device, work=work, seed=seed, bf16=bf16)
    model = _sft(model, tokenizer, sft_rows, config, summary, **stage_args)
    model = _kto(model, tokenizer, kto_rows, config, summary, **stage_args)
    # Both stages train a PeftModel (get_peft_model / PeftModel.from_pretrained above); KTO adds its frozen
    # reference copy as the adapter "ref".
    if "ref" in model.peft_config:
        model.delete_adapter("ref")
    model.set_adapter("default")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save_pretrained(str(out_dir), selected_adapters=["default"])
    # The same adapter for llama.cpp, which serves it on CPU at about five times transformers' speed.
    summary["gguf_adapter"] = export_lora_gguf(out_dir, base_path) is not None
    shutil.rmtree(work, ignore_errors=True)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    (out_dir / "training_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    del model
    gc.collect()
    return summary


def _sft(model, tokenizer, rows: list[dict], config, summary: dict, *, device: str, work: Path, seed: int, bf16: bool):
    """The SFT stage (module doc); its figures go into `summary`; returns the trained model."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows, too_long = _fits(tokenizer, rows, config.composer_max_length)
    summary["too_long"] = too_long
    step = time.perf_counter()
    steps = _steps(len(rows), config)
    args = SFTConfig(**_common_args(config, device, work / "sft", steps, seed=seed, bf16=bf16,
                                    batch_size=config.composer_batch_size),
                     learning_rate=config.composer_learning_rate, completion_only_loss=True, packing=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    _quiet(trainer)
    trainer.train()
    summary["sft"] = {"rows": len(rows), "steps": trainer.state.global_step, **_losses(trainer),
                      "seconds": round(time.perf_counter() - step, 2)}
    return trainer.model


def _kto(model, tokenizer, rows: list[dict], config, summary: dict, *, device: str, work: Path, seed: int, bf16: bool):
    """The KTO stage (module doc), when there is a 👎'd row to learn from; returns the model, trained or not."""
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    rows, too_long = _fits(tokenizer, rows, config.composer_max_length)
    n_good = sum(r["label"] for r in rows)
    n_bad = len(rows) - n_good
    if n_bad == 0 or len(rows) < 2:
        summary["kto"] = {"skipped": "no 👎'd composed answer to learn from" if n_bad == 0 else "fewer than 2 rows"}
        return model
    step = time.perf_counter()
    # Desirable and undesirable rows interleaved (KTO reads them in order: its KL term pairs
    # each row with its neighbour's answer), weighted so both sides count the same in all.
    random.Random(seed).shuffle(rows)
    batch = max(2, config.composer_batch_size)
    steps = _steps(len(rows), config)
    args = KTOConfig(**_common_args(config, device, work / "kto", steps, seed=seed, bf16=bf16, batch_size=batch),
                     learning_rate=config.composer_kto_learning_rate, beta=config.composer_kto_beta,
                     desirable_weight=1.0, undesirable_weight=round(max(n_good, 1) / n_bad, 4))
    trainer = KTOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    _quiet(trainer)
    trainer.train()
    summary["kto"] = {"rows": len(rows), "desirable": n_good, "undesirable": n_bad, "too_long": too_long,
                      "steps": trainer.state.global_step, **_losses(trainer),
                      "seconds": round(time.perf_counter() - step, 2)}
    return trainer.model


# ----- the stage ---------------------------------------------------------------------------------

def run_composer(settings, config, champion, documents, data, heldout, work: Path, *, plan: dict) -> ComposerOutcome:
    """Train (when `plan` says so), gate, and say what the new version carries. Never raises: an
    error becomes status "error" (the champion's composer is carried over)."""
    from training.build import kb_hash

    carried = _carry(settings, champion)
    if not plan.get("train"):
        return ComposerOutcome("skipped", carried.adapter, carried.meta, {"status": "skipped", "plan": plan})
    started = time.perf_counter()
    try:
        return _run(settings, config, champion, documents, data, heldout, Path(work), plan, carried, kb_hash(documents))
    except Exception as exc:  # noqa: BLE001 - a composer failure never blocks the classifier's version
        log.exception("composer stage failed: %s", exc)
        return ComposerOutcome("error", carried.adapter, carried.meta,
                               {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:500], "plan": plan,
                                "seconds": round(time.perf_counter() - started, 2)})


def _carry(settings, champion) -> ComposerOutcome:
    """The champion's adapter and verdict, as the new version carries them when nothing replaces them."""
    adapter = usable_adapter(settings, champion)
    verdict = champion.composer
    if adapter is None and not verdict:
        return ComposerOutcome("carried")
    meta = {**verdict, "carried_from": verdict.get("carried_from") or champion.name}
    meta.pop("last_run", None)
    if adapter is None and champion.composer_dir is not None:
        meta.update({"approved": False, "note": f"{champion.name}'s adapter is for {verdict.get('base_model')}, "
                                                f"not {settings.compose.model}: not carried"})
    return ComposerOutcome("carried", adapter, meta)


def _run(settings, config, champion, documents, data, heldout, work: Path, plan: dict, carried: ComposerOutcome,
         kb: str) -> ComposerOutcome:
    from models.loading import resolve_causal_lm
    from training import compose_gate as gate

    compose = settings.compose
    timings: dict[str, float] = {}
    rows = gate.composer_heldout(heldout, documents, config=config, compose=compose,
                                 section_max_words=settings.section_max_words)
    if not any(r.answerable for r in rows):
        report = {"status": "skipped", "plan": {**plan, "train": False},
                  "reason": "no held-out question with an article: the composer's gate cannot judge a retrained one"}
        return ComposerOutcome("skipped", carried.adapter, carried.meta, report)
    device = config.device or settings.device
    step = time.perf_counter()
    base_path = resolve_causal_lm(compose.model, Path(settings.home) / "base_models")
    timings["base_model"] = round(time.perf_counter() - step, 2)
    scorer = _GateScorer(settings, config, rows, base_path, device, timings)
    current_adapter = usable_adapter(settings, champion)

    current_backend = scorer.backend_for(current_adapter)
    current = scorer.score(current_adapter, "current", current_backend)
    current["composer"] = f"{champion.name}'s adapter" if current_adapter else f"the base model {compose.model}"
    start = current_adapter if config.composer_start_from == "champion" else None
    adapter_dir = work / "composer"
    step = time.perf_counter()
    log.info("composer: SFT on %d rows, KTO on %d, from %s", len(data.sft), len(data.kto), plan.get("start_from"))
    training = train_composer(base_path, [r.sft() for r in data.sft], [r.kto() for r in data.kto], adapter_dir, config,
                              device=device, start_adapter=start, seed=config.seed)
    timings["training"] = round(time.perf_counter() - step, 2)
    backend = scorer.backend_for(adapter_dir)
    if backend != current_backend:  # both judged on one backend: transformers when either adapter needs it
        backend = "transformers"
        current = {**scorer.score(current_adapter, "current", backend), "composer": current["composer"]}
    candidate = scorer.score(adapter_dir, "candidate", backend)
    decision = gate.decide_composer(current, candidate, config)
    verdict = {"approved": decision.promote, "metrics": _public(candidate), "current_metrics": _public(current),
               "checks": decision.checks, "reasons": decision.reasons, "base_model": compose.model, "kb_hash": kb,
               "reason": "; ".join(decision.reasons) or "every rule of the composer's gate passed",
               "heldout_key": scorer.key, "heldout_rows": len(rows), "adapter_id": gate.adapter_id(adapter_dir),
               "trained": {k: training.get(k) for k in ("device", "dtype", "sft", "kto", "too_long", "seconds",
                                                        "trainable_parameters")},
               "data": data.counts, "judged_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    report = {"status": "approved" if decision.promote else "rejected", "plan": plan, "verdict": verdict,
              "current": current.get("composer"), "timings": timings, "samples": {
                  "current": current.get("samples"), "candidate": candidate.get("samples")},
              "training_rows": [r.summary() for r in data.sft[:3]]}
    log.info("composer gate: %s (%s)", report["status"], "; ".join(decision.reasons) or "every rule passed")
    return _outcome(decision.promote, adapter_dir, verdict, report, carried)


def _outcome(approved: bool, adapter_dir: Path, verdict: dict, report: dict,
             carried: ComposerOutcome) -> ComposerOutcome:
    """An approved adapter with its verdict; a rejected one leaves the carried adapter and verdict, with this
    run's verdict under "last_run" (its verdict alone when nothing is carried)."""
    if approved:
        return ComposerOutcome("approved", adapter_dir, verdict, report)
    last_run = {k: verdict[k] for k in ("approved", "metrics", "current_metrics", "checks", "reasons", "reason",
                                        "kb_hash", "judged_at")}
    if carried.adapter is not None or carried.meta:
        return ComposerOutcome("rejected", carried.adapter, {**(carried.meta or {}), "last_run": last_run}, report)
    return ComposerOutcome("rejected", None, verdict, report)


class _GateScorer:
    """Scores a composer (the base model with an adapter, or without) on the gate's held-out rows, through
    the score cache; each fresh scoring's seconds go into `timings` as score_<label>."""

    def __init__(self, settings, config, rows: list, base_path: str, device: str, timings: dict[str, float]):
        from models.loading import pick_device
        from training import compose_gate as gate

        self.compose = settings.compose
        self.config = config
        self.rows = rows
        self.base_path = base_path
        self.device = device
        self.timings = timings
        self.key = gate.heldout_key(rows, config)
        self.cache = gate.ScoreCache(settings.home)
        self.threads = config.composer_threads if pick_device(device) == "cpu" else 0
        self.served = settings.replace(device=device, torch_threads=self.threads)

    def backend_for(self, adapter: Path | None) -> str:
        """transformers (the default: the adapter in float32, the same greedy answers on every machine),
        or with composer_gate_backend = served the backend that would serve `adapter` (llama.cpp's
        answers depend on its build and CPU; an endpoint's model cannot be given a local adapter, so
        that case is judged in transformers)."""
        from models.composer import pick_backend

        if self.config.composer_gate_backend != "served":
            return "transformers"
        return "llama-cpp" if pick_backend(self.served, adapter) == "llama-cpp" else "transformers"

    def score(self, adapter: Path | None, label: str, backend: str) -> dict:
        from models.composer import TransformersChat, load_chat_model
        from training import compose_gate as gate

        cache_key = gate.ScoreCache.key(self.compose.model, gate.adapter_id(adapter), self.key, backend)
        cached = self.cache.get(cache_key)
        if cached is not None:
            log.info("composer gate: %s scores from the cache", label)
            return {**cached, "cached": True}
        step = time.perf_counter()
        with cpu_threads(self.threads):
            if backend == "llama-cpp":  # as serving loads it
                model = load_chat_model(self.served.replace(compose_backend="llama-cpp"), adapter_dir=adapter)
            else:
                model = TransformersChat(self.base_path, device=self.device, adapter_dir=adapter,
                                         name=self.compose.model)
            metrics = {**gate.score_composer(model, self.rows, config=self.config), "backend": backend}
            if backend == "llama-cpp":
                model.close()
        del model
        gc.collect()
        self.timings[f"score_{label}"] = round(time.perf_counter() - step, 2)
        self.cache.put(cache_key, metrics)
        return metrics


def _public(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "samples"}
