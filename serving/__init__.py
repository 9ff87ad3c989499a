"""Serving: the model versions on disk and the engine that answers from the champion (docs/architecture.md)."""
