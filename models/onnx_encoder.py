"""`OnnxEncoder`: the shared encoder pass through onnxruntime on CPU, from a folder that
`models.onnx_export.export_onnx` wrote (its file names and manifest: models/onnx_files.py).

It has `models.encoder.Encoder`'s interface (`encode`, `embed`, `dim`, `n_layers`, `name`, `device`)
and returns the same `Encoded` features, so the intent head, retrieval and the sentiment head read it
unchanged. Tokenisation uses the `tokenizers` library on the saved tokenizer.json with the model's
max_seq_length (truncation) and longest-in-batch padding, as sentence-transformers does; pooling and
normalisation are inside the graph (they are the model's own modules, traced at export).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.errors import UserError
from core.runtime import thread_pool
from models.encoder import Encoded
from models.onnx_files import MANIFEST, OUTPUT_NAMES, STATES_NAME, read_manifest

RUNTIME_OF_VARIANT = {"fp32": "onnx", "int8": "onnx-int8"}


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def cpu_session(path: Path, *, threads: int = 0, spin: bool = False, what: str = "ONNX file"):
    """An onnxruntime CPU session as csbot runs them: `threads` intra-op threads (0: onnxruntime's
    default), one inter-op thread, sequential, every graph optimisation, no busy-waiting unless `spin`;
    a file onnxruntime cannot load is one UserError line ("{what} PATH cannot be loaded: ...")."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads and threads > 0:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        raise UserError(f"{what} {path} cannot be loaded: {_first_line(exc)}") from None


def one_text_workers(workers: int) -> int:
    """How many texts an int8 graph runs at once for a `batch_threads` setting (0: one per core)."""
    return int(workers) if workers and workers > 0 else (os.cpu_count() or 1)


def map_texts(fn, items: list, workers: int) -> list:
    """`[fn(item) for item in items]`, spread over `workers` threads when there is more than one item.

    For graphs that run one text at a time (int8, see OnnxEncoder.encode): onnxruntime releases the GIL
    while a session runs and a session may run on several threads at once, so on N cores N texts run
    side by side, each on one intra-op thread (on 2 cores 1.9x the texts a second of one thread; one
    text on two intra-op threads is slower than on one, because a short text's matrices are too small
    to split). Worker k takes items k, k+N, ... so that long and short texts mix. One pool per worker
    count for the process (`core.runtime.thread_pool`); the caller's thread takes the first share, and
    a single item runs there alone."""
    if workers <= 1 or len(items) < 2:
        return [fn(item) for item in items]
    workers = min(workers, len(items))
    others = [thread_pool("onnx", workers - 1).submit(lambda k=k: [fn(item) for item in items[k::workers]]) for k in range(1, workers)]
    parts = [[fn(item) for item in items[0::workers]]] + [future.result() for future in others]
    out: list = [None] * len(items)
    for k, part in enumerate(parts):
        out[k::workers] = part
    return out


class OnnxEncoder:
    """`variant`: "fp32" or "int8". `threads`: fp32's onnxruntime intra-op threads, as the torch_threads
    setting (0: onnxruntime's default, one per core). int8 runs one text at a time on one intra-op thread,
    and `workers` texts side by side (`map_texts`; the batch_threads setting, 0: one per core). `spin`:
    let idle intra-op threads busy-wait (a little lower latency under steady load, but burns CPU between
    messages; off by default)."""

    def __init__(self, folder: str | Path, variant: str = "fp32", *, threads: int = 0, workers: int = 0,
                 spin: bool = False, manifest: dict | None = None):
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from tokenizers import Tokenizer

        self.folder = Path(folder).expanduser()
        self.manifest = manifest if manifest is not None else read_manifest(self.folder)
        entry = self.manifest["variants"].get(variant)
        if entry is None:
            raise UserError(f"ONNX encoder folder {self.folder} has no {variant!r} variant "
                            f"(it has {sorted(self.manifest['variants'])})")
        self.variant = variant
        self.runtime = RUNTIME_OF_VARIANT[variant]
        self.source = self.manifest.get("source", {}).get("name")
        self.name = f"{self.folder}#{self.runtime}"
        self.device = "cpu"
        self.threads = int(threads or 0)
        self.workers = one_text_workers(workers) if variant == "int8" else 1

        model_path = self.folder / entry["file"]
        if not model_path.is_file():
            raise UserError(f"ONNX encoder file {model_path} is missing (export the folder again)")
        if "bytes" in entry and model_path.stat().st_size != entry["bytes"]:
            raise UserError(f"ONNX encoder file {model_path} is {model_path.stat().st_size} bytes, "
                            f"its {MANIFEST} says {entry['bytes']}: truncated or replaced (export the folder again)")
        tokenizer_path = self.folder / "tokenizer.json"
        try:
            self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise UserError(f"ONNX encoder tokenizer {tokenizer_path} is unreadable: {_first_line(exc)}") from None
        self._tokenizer.enable_truncation(max_length=int(self.manifest["max_seq_length"]))
        self._tokenizer.enable_padding(pad_id=int(self.manifest["pad_token_id"]),
                                       pad_token=self.manifest.get("pad_token") or "[PAD]")
        self._lower = bool(self.manifest.get("do_lower_case", False))

        self._session = cpu_session(model_path, threads=1 if variant == "int8" else self.threads, spin=spin,
                                    what="ONNX encoder file")
        inputs = [i.name for i in self._session.get_inputs()]
        outputs = [o.name for o in self._session.get_outputs()]
        if sorted(inputs) != sorted(self.manifest["inputs"]) or list(outputs[:2]) != list(OUTPUT_NAMES):
            raise UserError(f"ONNX encoder file {model_path} takes {inputs} and gives {outputs}; "
                            f"{MANIFEST} expects {self.manifest['inputs']} -> {list(OUTPUT_NAMES)}")
        self._inputs = inputs
        self._outputs = outputs

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def n_layers(self) -> int:
        return int(self.manifest["n_layers"])

    @property
    def token_states(self) -> dict | None:
        """The manifest's `token_states` record ({layer, prefix_sha256, tokenizer_sha256}) when the graph
        outputs a hidden state's token states, else None."""
        record = self.manifest.get("token_states")
        return record if record and STATES_NAME in self._outputs else None

    def _features(self, batch: list[str]) -> dict[str, np.ndarray]:
        encodings = self._tokenizer.encode_batch(batch)
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        return {name: arrays[name] for name in self._inputs}

    def encode(self, texts: list[str], batch_size: int = 64, *, states: bool = False) -> Encoded:
        """`states`: also return each text's token states (`Encoded.token_states`, without padding);
        needs an export with them (`token_states` is not None)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts")
        if states and self.token_states is None:
            raise ValueError(f"{self.name} has no token_states output (export it with token_states_layer)")
        if not texts:
            hidden = int(self.manifest["hidden"])
            return Encoded(np.zeros((0, self.dim), np.float32), np.zeros((0, self.n_layers + 1, hidden), np.float32),
                           [] if states else None)
        names = list(OUTPUT_NAMES) + ([STATES_NAME] if states else [])
        if self.variant == "int8":
            # Dynamic int8 quantises activations with one scale per run, so a text's embedding would
            # depend on its batchmates (and their padding): int8 runs one text at a time, and answers
            # the same question the same way whatever else is asked with it; texts run side by side.
            order = list(range(len(texts)))
            runs = map_texts(lambda text: self._run([text], names), list(texts), self.workers)
        else:
            # As Encoder: sorted by length to keep padding low, put back in input order at the end.
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
            runs = [self._run([texts[i] for i in order[start:start + batch_size]], names)
                    for start in range(0, len(texts), batch_size)]
        inverse = np.argsort(np.array(order))
        token_states = [cut for run in runs for cut in run[2]] if states else None
        return Encoded(np.concatenate([r[0] for r in runs])[inverse], np.concatenate([r[1] for r in runs])[inverse],
                       [token_states[i] for i in inverse] if states else None)

    def _run(self, batch: list[str], names: list[str]) -> list:
        """One session run over `batch`: [embeddings (n, dim), pooled layers (n, L+1, h)] and, when
        `names` asks for them, [one (tokens, h) array per text, cut to its own tokens]."""
        batch = [text or " " for text in batch]
        if self._lower:
            batch = [t.lower() for t in batch]
        features = self._features(batch)
        sentence, pooled, *rest = self._session.run(names, features)
        result = [sentence.astype(np.float32, copy=False), pooled.astype(np.float32, copy=False)]
        if rest:  # each row cut to its own tokens (padding is on the right)
            lengths = (features["attention_mask"].sum(1) if "attention_mask" in features
                       else [rest[0].shape[1]] * len(batch))
            result.append([rest[0][row, :int(n)].astype(np.float32, copy=False) for row, n in enumerate(lengths)])
        return result

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Sentence embeddings only (for index building)."""
        return self.encode(texts, batch_size).embeddings
