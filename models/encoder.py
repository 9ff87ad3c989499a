"""One encoder pass per message, shared by every task.

`Encoder.encode(texts)` runs the transformer once and returns
- `embeddings`: the sentence embedding (the model's own pooling + normalisation), used by retrieval
  and by the intent head;
- `layers`: the mean-pooled hidden state of every layer (index 0 = word embeddings), used by the
  sentiment head, which reads layers that intent fine-tuning leaves frozen (see models/intent.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from core.settings import GeneralSettings
from models.loading import inner_model, load_sentence_transformer


@dataclass
class Encoded:
    embeddings: np.ndarray  # (n, dim) float32, L2-normalised
    layers: np.ndarray  # (n, n_layers + 1, hidden) float32, mean-pooled per layer
    # One (tokens, hidden) float32 array per text, without padding: the hidden state the ONNX export's
    # `token_states` output holds (OnnxEncoder.encode(..., states=True)); None when not asked for.
    token_states: list[np.ndarray] | None = field(default=None, compare=False)


class Encoder:
    def __init__(self, name: str, device: str = GeneralSettings.device, *, model=None, cached: bool = True):
        self.name = name
        self.model = model if model is not None else load_sentence_transformer(name, device, cached=cached)
        self.device = str(self.model.device)
        self._transformer_config().output_hidden_states = True
        # sentence-transformers 6 renamed tokenize() to preprocess(); older versions only have tokenize().
        self._preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize

    def _transformer_config(self):
        return inner_model(self.model).config

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def n_layers(self) -> int:
        return int(self._transformer_config().num_hidden_layers)

    def encode(self, texts: list[str], batch_size: int = 64) -> Encoded:
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts")
        if not texts:
            hidden = int(self._transformer_config().hidden_size)
            return Encoded(np.zeros((0, self.dim), np.float32), np.zeros((0, self.n_layers + 1, hidden), np.float32))
        embeddings, layers = [], []
        # Sorting by length keeps padding low in batches; results are put back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(texts), batch_size):
            batch = [texts[i] or " " for i in order[start:start + batch_size]]
            features = self._preprocess(batch)
            features = {k: v.to(self.model.device) if hasattr(v, "to") else v for k, v in features.items()}
            with torch.inference_mode():
                out = self.model(features)
            mask = out["attention_mask"].unsqueeze(-1).to(out["sentence_embedding"].dtype)
            stacked = torch.stack(tuple(out["all_layer_embeddings"]), dim=1)  # (b, L+1, t, h)
            pooled = (stacked * mask.unsqueeze(1)).sum(2) / mask.sum(1).clamp(min=1e-9).unsqueeze(1)
            embeddings.append(out["sentence_embedding"].float().cpu().numpy())
            layers.append(pooled.float().cpu().numpy())
        inverse = np.argsort(np.array(order))
        return Encoded(np.concatenate(embeddings)[inverse], np.concatenate(layers)[inverse])

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Sentence embeddings only (for index building)."""
        return self.encode(texts, batch_size).embeddings
