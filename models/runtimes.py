"""Which runtime runs the encoder: torch, ONNX fp32 or ONNX int8.

- `load_encoder(name_or_folder, runtime, device=..., threads=...)` gives an `EncoderRuntime`
  (models/protocols.py) for any runtime, so the engine swaps runtimes in one line.
- `choose_runtime(...)` is the gate's rule, a pure function of the measured figures: int8 serves when
  its accuracy is within `margin` of fp32 ONNX and its embeddings' cosine stays at or above
  `cosine_floor`; otherwise fp32 ONNX; otherwise (no usable ONNX export) torch. Given the rows on which
  the two disagree, a loss past the margin counts only when it is beyond chance (`sign_test_p`): on a
  held-out set of a few hundred rows one question is more than 0.5 pt, and a coin flip should not
  double the serving cost.
"""

from __future__ import annotations

import math
from pathlib import Path

from core.errors import UserError
from core.settings import GeneralSettings
from models.protocols import EncoderRuntime

RUNTIMES = ("torch", "onnx", "onnx-int8")
VARIANT_OF_RUNTIME = {"onnx": "fp32", "onnx-int8": "int8"}
DEFAULT_MARGIN = 0.005  # 0.5 accuracy point
DEFAULT_COSINE_FLOOR = 0.98
# A loss past the margin makes fp32 serve only when a one-sided sign test on the rows where the two
# variants disagree puts it beyond chance at this level.
LOSS_SIGNIFICANCE = 0.05


def sign_test_p(worse: int, better: int) -> float:
    """One-sided exact sign test (McNemar's exact test) on paired right/wrong outcomes: the chance of int8
    being wrong on at least `worse` of the `worse + better` rows where exactly one variant is right, if
    neither variant were better. 1.0 when they never disagree."""
    if worse < 0 or better < 0:
        raise ValueError(f"row counts must be ≥ 0; got {worse}, {better}")
    n = worse + better
    if n == 0:
        return 1.0
    return min(1.0, sum(math.comb(n, k) for k in range(worse, n + 1)) / 2 ** n)


def load_encoder(name_or_folder: str | Path, runtime: str = "torch", *, device: str = GeneralSettings.device,
                 threads: int = 0, workers: int = 0) -> EncoderRuntime:
    """An encoder for `runtime`.

    torch: `name_or_folder` is a model name as models/loading.py takes it; `threads` is left to the
    torch_threads setting (core.runtime.limit_threads sets it process-wide), so it is not applied here.
    onnx / onnx-int8: `name_or_folder` is a folder written by models.onnx_export; CPU only (CUDA
    serving stays torch); `threads` is fp32's onnxruntime intra-op thread count (0: its default),
    `workers` how many texts int8 runs side by side (the batch_threads setting; 0: one per core).
    """
    if runtime not in RUNTIMES:
        raise UserError(f"unknown encoder runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    if runtime == "torch":
        from models.encoder import Encoder

        return Encoder(str(name_or_folder), device)
    if (device or "auto").lower() not in ("auto", "cpu"):
        raise UserError(f"the {runtime} runtime runs on CPU only; device {device!r} needs runtime torch")
    from models.onnx_encoder import OnnxEncoder

    return OnnxEncoder(name_or_folder, VARIANT_OF_RUNTIME[runtime], threads=threads, workers=workers)


def _usable(value: float | None, what: str, low: float = 0.0, high: float = 1.0) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if not low <= value <= high:
        raise ValueError(f"{what} must be in [{low}, {high}] (a fraction, not a percentage); got {value}")
    return True


def choose_runtime(fp32_accuracy: float | None, int8_accuracy: float | None, int8_cosine: float | None, *,
                   margin: float = DEFAULT_MARGIN, cosine_floor: float = DEFAULT_COSINE_FLOOR,
                   discordant: tuple[int, int] | None = None) -> tuple[str, str]:
    """(runtime, reason) from the gate's held-out figures.

    Accuracies are fractions in [0, 1] measured on the same held-out set; `int8_cosine` is the int8
    embeddings' cosine to fp32 (the minimum, or a low percentile, over a probe set). None or NaN means
    "not measured / export failed": without fp32 figures neither ONNX variant serves. `discordant`:
    (rows only fp32 got right, rows only int8 got right) on that set; with it, a loss past the margin
    that a sign test cannot tell from chance (p ≥ LOSS_SIGNIFICANCE) does not count against int8.
    """
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be a fraction in [0, 1); got {margin}")
    if not -1 <= cosine_floor <= 1:
        raise ValueError(f"cosine_floor must be in [-1, 1]; got {cosine_floor}")
    has_fp32 = _usable(fp32_accuracy, "fp32_accuracy")
    has_int8 = _usable(int8_accuracy, "int8_accuracy")
    has_cosine = _usable(int8_cosine, "int8_cosine", -1.0, 1.0)
    if not has_fp32:
        return "torch", "no fp32 ONNX accuracy (export missing or failed): torch serves"
    if not has_int8 or not has_cosine:
        return "onnx", "int8 not measured: fp32 ONNX serves"
    loss = fp32_accuracy - int8_accuracy
    # A tiny tolerance so a loss of exactly `margin` (e.g. 0.850 - 0.845) is not lost to float rounding.
    within = loss <= margin + 1e-9
    chance = ""
    if not within and discordant is not None:
        worse, better = discordant
        p = sign_test_p(worse, better)
        chance = (f"{worse} rows only fp32 gets right, {better} only int8; sign test p {p:.2f} "
                  f"{'≥' if p >= LOSS_SIGNIFICANCE else '<'} {LOSS_SIGNIFICANCE}")
        within = p >= LOSS_SIGNIFICANCE
    close = int8_cosine >= cosine_floor
    if within and close:
        if chance:
            return "onnx-int8", (f"int8 accuracy {int8_accuracy:.2%} against fp32 {fp32_accuracy:.2%}: a loss past "
                                 f"{margin * 100:.1f} pt within chance ({chance}), and its cosine "
                                 f"{int8_cosine:.4f} ≥ {cosine_floor}")
        return "onnx-int8", (f"int8 accuracy {int8_accuracy:.2%} is within {margin * 100:.1f} pt of fp32 "
                             f"{fp32_accuracy:.2%} and its cosine {int8_cosine:.4f} ≥ {cosine_floor}")
    why = []
    if not within:
        why.append(f"int8 loses {loss * 100:.2f} pt (> {margin * 100:.1f}" + (f"; {chance})" if chance else ")"))
    if not close:
        why.append(f"int8 cosine {int8_cosine:.4f} < {cosine_floor}")
    return "onnx", "; ".join(why) + ": fp32 ONNX serves"


DEFAULT_SENTIMENT_MIN_AGREEMENT = 0.98


def choose_sentiment_runtime(fp32_vs_torch: dict | None, int8_vs_torch: dict | None, *,
                             min_agreement: float = DEFAULT_SENTIMENT_MIN_AGREEMENT,
                             cosine_floor: float = DEFAULT_COSINE_FLOOR) -> tuple[str, str]:
    """(runtime, reason) for the fine-tuned sentiment model, from its export's agreement with torch
    (`models.sentiment_onnx.compare_to_torch` on the probe texts; a KB brings no sentiment labels, so
    agreement stands in for accuracy: a variant's accuracy can fall by at most its disagreement).
    int8 serves when its labels agree with torch's on ≥ `min_agreement` of the texts and the
    5th-percentile cosine of its probability vectors is ≥ `cosine_floor`; else fp32 ONNX when it
    agrees as well; else torch."""
    if not 0 <= min_agreement <= 1:
        raise ValueError(f"min_agreement must be a fraction in [0, 1]; got {min_agreement}")

    def passes(figures):
        return (figures is not None and figures.get("label_agreement", 0) >= min_agreement
                and figures.get("probability_cosine_p5", -1) >= cosine_floor)

    def describe(figures):
        return (f"label agreement with torch {figures.get('label_agreement', 0):.2%}, probability cosine p5 "
                f"{figures.get('probability_cosine_p5', -1):.4f}" if figures else "not measured")

    if passes(int8_vs_torch) and passes(fp32_vs_torch):
        return "onnx-int8", f"int8 {describe(int8_vs_torch)} (≥ {min_agreement:.0%}, ≥ {cosine_floor})"
    if passes(fp32_vs_torch):
        return "onnx", f"int8 {describe(int8_vs_torch)} misses ≥ {min_agreement:.0%} / ≥ {cosine_floor}: fp32 ONNX serves"
    return "torch", f"fp32 ONNX {describe(fp32_vs_torch)} misses ≥ {min_agreement:.0%}: torch serves"


def choose_shared(figures: dict | None, *, min_agreement: float = DEFAULT_SENTIMENT_MIN_AGREEMENT) -> tuple[bool, str]:
    """(served, reason) for the sentiment model's shared path (the encoder pass's token states through
    its tail; `models.sentiment_onnx.compare_shared`, the own pass as the reference): it serves when its
    labels agree with the own pass on ≥ `min_agreement` of the probe texts."""
    if not 0 <= min_agreement <= 1:
        raise ValueError(f"min_agreement must be a fraction in [0, 1]; got {min_agreement}")
    if not figures or not figures.get("texts"):
        return False, "the shared path was not measured: the model's own pass serves"
    agreement = float(figures.get("label_agreement", 0))
    if agreement >= min_agreement:
        return True, (f"labels from the encoder pass agree with the model's own pass on {agreement:.2%} of "
                      f"{figures['texts']} probe texts (≥ {min_agreement:.0%})")
    return False, (f"labels from the encoder pass agree with the model's own pass on only {agreement:.2%} "
                   f"(< {min_agreement:.0%}): the own pass serves")
