"""Language-model backends that compose answers: one interface, `ChatModel.stream(messages, ...)`.

- `TransformersChat`: any Hugging Face causal LM (a folder or hub name; the embedded default is
  SmolLM2-135M-Instruct, see `models.loading.resolve_causal_lm`), optionally with a LoRA adapter a
  retrain trained (peft), in process, on CUDA when present. Tokens stream through transformers'
  `TextIteratorStreamer` while `generate` runs on its own thread.
- `LlamaCppChat`: a GGUF file through llama.cpp (llama-cpp-python), the fast CPU runtime for the
  embedded default (about 60 tokens/s on one core against about 10 in transformers); a retrained
  adapter is applied in its GGUF form (models/composer_gguf.py, written by the retrain), so a
  version whose adapter has no GGUF form is served by `TransformersChat`.
- `OpenAIChat` (models/composer_openai.py): an OpenAI-compatible chat endpoint.

The policy around a backend (the prompt, citations, the guard, the budgets) is serving/compose.py.
"""

from __future__ import annotations

import atexit
import logging
import threading
from pathlib import Path
from typing import Generator, Protocol, runtime_checkable

from core.settings import ComposeSettings, GeneralSettings
from models.cancel import Cancel  # noqa: F401 - backends and serving take the signal from here or models.cancel

log = logging.getLogger("csbot.composer")


@runtime_checkable
class ChatModel(Protocol):
    """What serving/compose.py needs of a backend (TransformersChat, LlamaCppChat, OpenAIChat)."""

    name: str

    def stream(self, messages: list[dict], *, max_new_tokens: int,
               temperature: float = ComposeSettings.temperature, stop: list[str] | None = None,
               cancel: Cancel | None = None) -> Generator[str, None, None]:
        """The reply to `messages` ([{role, content}], chat format) as text pieces, in order; it
        ends before any of the `stop` strings. Once `cancel` is set (from another thread: the
        composer's deadline passed) the generation stops as soon as the backend can tell, even in the
        middle of reading the prompt, and the stream ends; what it yields then no longer matters.
        Closing the generator early releases what the generation holds (a connection, a thread)."""
        ...


class TransformersChat:
    """A causal LM through transformers (`generate`, greedy unless temperature > 0)."""

    def __init__(self, path: str, *, device: str = GeneralSettings.device, threads: int = 0,
                 adapter_dir: str | Path | None = None, name: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from models.loading import pick_device, quiet_transformers

        quiet_transformers()
        self.device = pick_device(device)
        if threads and self.device == "cpu":
            torch.set_num_threads(threads)
        self.name = name or str(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        if adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
        self.model = model.to(self.device).eval()
        self._lock = threading.Lock()  # one generation at a time per loaded model

    def prompt_ids(self, messages: list[dict]):
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                  return_dict=True).to(self.device)

    def _generate_kwargs(self, temperature: float) -> dict:
        """What every generation here uses (streamed or batched): greedy unless temperature > 0."""
        sampling = dict(do_sample=True, temperature=temperature, top_p=0.9) if temperature > 0 else dict(
            do_sample=False, temperature=None, top_p=None, top_k=None)
        return dict(pad_token_id=self.tokenizer.eos_token_id, repetition_penalty=1.1, **sampling)

    def generate_batch(self, conversations: list[list[dict]], *, max_new_tokens: int,
                       temperature: float = ComposeSettings.temperature, stop: list[str] | None = None,
                       batch_size: int = 8) -> list[str]:
        """The replies to many prompts, generated `batch_size` at a time (left-padded; for evaluation,
        where one batched pass is several times cheaper than one stream per prompt). Each reply ends
        before its first `stop` string, as `stream` ends."""
        import torch

        tokenizer = self.tokenizer
        side = tokenizer.padding_side
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        replies: list[str] = []
        try:
            tokenizer.padding_side = "left"
            for start in range(0, len(conversations), batch_size):
                texts = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
                         for m in conversations[start:start + batch_size]]
                inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
                with self._lock, torch.inference_mode():
                    out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, stop_strings=stop or None,
                                              tokenizer=tokenizer, **self._generate_kwargs(temperature))
                for row in out[:, inputs["input_ids"].shape[1]:]:
                    text = tokenizer.decode(row, skip_special_tokens=True)
                    cut = _until_stop("", text, stop)[1]
                    replies.append(text if cut is None else cut)
        finally:
            tokenizer.padding_side = side
        return replies

    def stream(self, messages: list[dict], *, max_new_tokens: int,
               temperature: float = ComposeSettings.temperature, stop: list[str] | None = None,
               cancel: Cancel | None = None) -> Generator[str, None, None]:
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        inputs = self.prompt_ids(messages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=120)
        failure: list[BaseException] = []
        # `generate` checks its stopping criteria after every token: a cancelled one ends at the next
        # (and frees the model's lock for the next question) instead of writing to max_new_tokens.
        halt = StoppingCriteriaList([_Cancelled(cancel)] if cancel is not None else [])

        def run() -> None:
            try:
                with self._lock, torch.inference_mode():
                    if cancel is not None and cancel.is_set():  # cancelled while waiting for the lock
                        streamer.end()
                        return
                    self.model.generate(**inputs, max_new_tokens=max_new_tokens, streamer=streamer,
                                        stop_strings=stop or None, tokenizer=self.tokenizer,
                                        stopping_criteria=halt, **self._generate_kwargs(temperature))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, name="csbot-generate", daemon=True)
        thread.start()
        text = ""
        try:
            for piece in streamer:
                if piece:
                    text, cut = _until_stop(text, piece, stop)
                    if cut is not None:
                        if cut:
                            yield cut
                        break
                    yield piece
        finally:
            thread.join()
        if failure:
            raise failure[0]


class _Cancelled:
    """A transformers stopping criterion: stop every sequence once `cancel` is set."""

    def __init__(self, cancel: Cancel):
        self.cancel = cancel

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.cancel.is_set(), dtype=torch.bool, device=input_ids.device)


def disable_extra_buffers() -> None:
    """Make llama-cpp-python load models without llama.cpp's extra CPU buffer types (AMX and repacked
    weights; `llama_model_params.use_extra_bufts = false`, as llama.cpp's `--no-extra-bufts`).

    A source build on a CPU with AMX-INT8 (Sapphire Rapids) crashed with a segmentation fault in the
    first `decode` of SmolLM2's Q4_1 weights (llama-cpp-python 0.3.36); without the extra buffer
    types it runs. llama-cpp-python's `Llama` takes no argument for it, so its default-parameters
    function is wrapped, once per process (idempotent)."""
    global _default_params_wrapper
    import llama_cpp

    module = llama_cpp.llama_cpp
    original = module.llama_model_default_params
    if original is _default_params_wrapper:
        return

    def default_params():
        params = original()
        if hasattr(params, "use_extra_bufts"):  # llama.cpp's struct: older builds lack the field
            params.use_extra_bufts = False
        return params

    _default_params_wrapper = default_params
    module.llama_model_default_params = default_params


_default_params_wrapper = None  # the wrapper disable_extra_buffers installed in llama_cpp, once per process


class LlamaCppChat:
    """A GGUF model through llama.cpp (greedy unless temperature > 0)."""

    def __init__(self, gguf_path: str | Path, *, threads: int = 0, context_tokens: int = 4096, name: str | None = None,
                 lora_path: str | Path | None = None):
        from llama_cpp import Llama

        self.name = name or str(gguf_path)
        self.lora_path = str(lora_path) if lora_path else None
        self.llm: Llama | None = None
        disable_extra_buffers()
        self.llm = Llama(model_path=str(gguf_path), n_ctx=context_tokens, n_threads=threads or None, verbose=False,
                         lora_path=self.lora_path)
        if getattr(self.llm.model_params, "use_extra_bufts", False):
            raise RuntimeError("llama.cpp model loaded with extra buffer types")  # the wrapper above must hold
        self._lock = threading.Lock()
        atexit.register(self.close)  # llama.cpp's own __del__ fails noisily at interpreter exit

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.close()

    def stream(self, messages: list[dict], *, max_new_tokens: int,
               temperature: float = ComposeSettings.temperature, stop: list[str] | None = None,
               cancel: Cancel | None = None) -> Generator[str, None, None]:
        with self._lock:
            flag = _AbortFlag(self.llm, cancel) if cancel is not None else None
            try:
                for chunk in self.llm.create_chat_completion(messages=messages, max_tokens=max_new_tokens,
                                                             temperature=temperature, stop=stop or None,
                                                             repeat_penalty=1.1, stream=True):
                    piece = chunk["choices"][0]["delta"].get("content")
                    if piece:
                        yield piece
                    if flag is not None and flag.cancelled():
                        return
            except RuntimeError:
                if flag is not None and flag.cancelled():  # llama_decode aborted (returned 2): as asked
                    return
                raise
            finally:
                if flag is not None:
                    flag.release()


class _AbortFlag:
    """Stops llama.cpp's `llama_decode` once `cancel` is set, also in the middle of a prompt (on a
    CPU the prompt is most of the time to the first token: seconds of both cores after a missed
    first-token budget). llama.cpp asks its abort callback after every graph node; the callback is
    libc's `strlen` on a two-byte buffer, "\\0\\0" (0: go on) or "\\1\\0" (1: abort), so the check
    is C only: a Python callback would take the GIL at every node, from llama.cpp's thread, behind
    whatever else the process runs. Without libc's strlen only the pieces stop (the stream's loop)."""

    def __init__(self, llm, cancel: Cancel):
        import ctypes

        import llama_cpp

        self.llm, self.cancel = llm, cancel
        self.buffer = ctypes.create_string_buffer(2)  # kept alive while llama.cpp may read it
        try:
            strlen = ctypes.cast(ctypes.CDLL(None).strlen, ctypes.c_void_p).value
        except (OSError, AttributeError):
            strlen = None
        self.armed = strlen is not None
        self._forget = None
        if self.armed:
            self._callback = llama_cpp.ggml_abort_callback(strlen)
            llama_cpp.llama_set_abort_callback(llm.ctx, self._callback, ctypes.cast(self.buffer, ctypes.c_void_p))
            self._forget = cancel.on_set(lambda: self.buffer.__setitem__(0, 1))

    def cancelled(self) -> bool:
        return self.cancel.is_set()

    def release(self) -> None:
        """Unset the callback: the context serves later generations."""
        import llama_cpp

        if self.armed:
            self._forget()
            llama_cpp.llama_set_abort_callback(self.llm.ctx, llama_cpp.ggml_abort_callback(), None)


def _until_stop(text: str, piece: str, stop: list[str] | None) -> tuple[str, str | None]:
    """(text + piece, None), or (.., the part of `piece` before a stop string) once one appears
    (transformers' `stop_strings` ends generation, but the streamer has the stop string's tokens)."""
    joined = text + piece
    for s in stop or []:
        at = joined.find(s)
        if at != -1:
            return joined[:at], joined[len(text):at] if at > len(text) else ""
    return joined, None


def llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def pick_backend(settings, adapter_dir: str | Path | None = None) -> str:
    """The backend that serves `settings.compose` (with `adapter_dir`, a retrained adapter):
    "openai", "llama-cpp" or "transformers". "auto": llama.cpp for a GGUF model (the builtin, or a
    .gguf path) on CPU when llama-cpp-python is installed and the adapter, if any, has its GGUF form;
    else transformers (the adapter merged in). "llama-cpp" named with an adapter that has no GGUF
    form serves transformers too (with a warning): the adapter is the version's, never dropped."""
    from models.composer_gguf import gguf_adapter
    from models.loading import pick_device, resolve_gguf

    backend = settings.compose.backend
    if backend not in ("auto", "llama-cpp"):
        return backend
    fits = adapter_dir is None or gguf_adapter(adapter_dir) is not None
    if backend == "llama-cpp":
        if not fits:
            log.warning("compose_backend is llama-cpp, but the version's composer adapter has no GGUF form: "
                        "transformers serves it")
        return "llama-cpp" if fits else "transformers"
    gguf = resolve_gguf(settings.compose.model, must=False)
    cpu = not pick_device(settings.device).startswith("cuda")
    return "llama-cpp" if gguf and fits and cpu and llama_cpp_available() else "transformers"


def load_chat_model(settings, *, adapter_dir: str | Path | None = None) -> ChatModel:
    """The backend `pick_backend` names for `settings.compose`, with the adapter applied."""
    from models.composer_gguf import gguf_adapter
    from models.loading import resolve_causal_lm, resolve_gguf

    compose = settings.compose
    backend = pick_backend(settings, adapter_dir)
    if backend == "openai":
        from models.composer_openai import OpenAIChat

        return OpenAIChat(compose.endpoint_url, compose.model, api_key=compose.api_key,
                          timeout=min(compose.endpoint_timeout_seconds, compose.latency_budget_seconds))
    if backend == "llama-cpp":
        return LlamaCppChat(resolve_gguf(compose.model), threads=settings.torch_threads, name=compose.model,
                            lora_path=gguf_adapter(adapter_dir))
    path = resolve_causal_lm(compose.model, settings.home / "base_models")
    return TransformersChat(path, device=settings.device, threads=settings.torch_threads, adapter_dir=adapter_dir,
                            name=compose.model)
