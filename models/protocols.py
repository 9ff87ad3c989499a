"""What serving and the builds call on a model runtime, as typed contracts.

Encoders (one pass per message, shared by every task):
- `EncoderRuntime`: `models.encoder.Encoder` (torch) and `models.onnx_encoder.OnnxEncoder` (ONNX
  fp32 / int8) alike, as `models.runtimes.load_encoder` returns them.
- `TokenStatesEncoder`: an encoder that can also hand out each text's token states (an ONNX export
  with a `token_states` output), from which a sentiment model's tail continues; `token_states` is
  its manifest record, None when this export has no such output.

Sentiment labelers (`serving.versions.ModelVersion.load_sentiment` returns one of them):
- `EncodedLabeler`: reads the shared encoder pass's features (`models.sentiment.SentimentModel`,
  the head over the frozen layers): `predict(encoded)`.
- `TextLabeler`: runs a pass of its own over the texts (`models.sentiment_model.FineTunedSentiment`,
  `models.sentiment_onnx.OnnxSentiment`): `predict(texts)`.
- `TailLabeler`: a TextLabeler that can also continue from another pass's token states
  (`OnnxSentiment`); `tail` is its manifest's tail record, None when this variant has no tail graph.

The two `predict`s take different arguments, so a labeler says which it is in `reads_encoder`
(True for an EncodedLabeler, False for a TextLabeler): the engine switches on that typed attribute,
and tests/test_contracts.py checks every real class against its Protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from models.encoder import Encoded

Labels = list[tuple[str, dict[str, float]]]  # one (label, {label: probability}) per text, in input order


@runtime_checkable
class EncoderRuntime(Protocol):
    """The shared encoder pass, whatever runs it."""

    name: str
    device: str

    @property
    def dim(self) -> int: ...

    @property
    def n_layers(self) -> int: ...

    def encode(self, texts: list[str], batch_size: int = 64) -> Encoded: ...

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray: ...


@runtime_checkable
class TokenStatesEncoder(EncoderRuntime, Protocol):
    """An encoder whose pass can also return each text's token states (`Encoded.token_states`)."""

    manifest: dict

    @property
    def token_states(self) -> dict | None: ...

    def encode(self, texts: list[str], batch_size: int = 64, *, states: bool = False) -> Encoded: ...


@runtime_checkable
class EncodedLabeler(Protocol):
    """Sentiment from the shared encoder pass's features."""

    reads_encoder: Literal[True]
    source: str

    def predict(self, encoded: Encoded) -> Labels: ...


@runtime_checkable
class TextLabeler(Protocol):
    """Sentiment from a pass of its own over the texts."""

    reads_encoder: Literal[False]
    runtime: str
    source: str
    labels: list[str]
    max_length: int

    def logits(self, texts: list[str], batch_size: int = 64) -> np.ndarray: ...

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray: ...

    def predict(self, texts: list[str], batch_size: int = 64) -> Labels: ...


@runtime_checkable
class TailLabeler(TextLabeler, Protocol):
    """A TextLabeler that continues from a TokenStatesEncoder's token states where they fit."""

    tail: dict | None
    manifest: dict

    def takes_states(self, states: np.ndarray | None) -> bool: ...

    def predict_proba_shared(self, texts: list[str], states: list[np.ndarray | None]) -> np.ndarray: ...

    def predict_shared(self, texts: list[str], states: list[np.ndarray | None]) -> Labels: ...


SentimentLabeler = EncodedLabeler | TextLabeler

