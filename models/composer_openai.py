"""An OpenAI-compatible chat endpoint as a composer backend (vLLM, llama.cpp's server, TGI, Ollama).

Placeholder until the client lands: the interface is `models.composer.ChatModel`."""

from __future__ import annotations

from typing import Iterator


class OpenAIChat:
    def __init__(self, base_url: str, model: str, *, api_key: str | None = None):
        self.name = f"{model} at {base_url}"
        self.base_url, self.model, self.api_key = base_url, model, api_key

    def stream(self, messages: list[dict], *, max_new_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        raise NotImplementedError("the OpenAI-compatible backend is not written yet")
        yield ""
