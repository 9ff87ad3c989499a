"""Process set-up shared by every entry point: quiet third-party logging; torch, FAISS and BLAS thread
limits; the process's own thread pools."""

from __future__ import annotations

import functools
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from core.settings import Settings


def quiet_libraries() -> None:
    """Silence the libraries' own progress bars and chatter (csbot shows its own progress).

    Set before the libraries are imported: tqdm reads TQDM_DISABLE when it is imported."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in ("sentence_transformers", "transformers", "datasets", "accelerate", "peft", "httpx", "faiss"):
        logging.getLogger(name).setLevel(logging.WARNING)


def limit_threads(settings: Settings) -> None:
    """Apply `torch_threads` (0: leave the libraries' defaults) to torch, to FAISS's OpenMP threads and to
    the BLAS libraries numpy and FAISS load (OpenBLAS, through threadpoolctl); onnxruntime sessions take
    it per session. A question's FAISS search is one small matrix product: a second OpenMP thread gains
    nothing on it, and when the cores are busy its barrier cost 1.5-4 ms per question on the 2-core VM
    (engine p50 7.1-9.6 ms with two threads, 5.6 with one). OpenBLAS's idle threads spin after each of
    the heads' small products and took the cores from int8's texts running side by side
    (`batch_threads`): a batch with the sentiment head answered 730 questions/s with them, 1,131 without."""
    if settings.torch_threads > 0:
        import faiss
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(settings.torch_threads)
        faiss.omp_set_num_threads(settings.torch_threads)
        threadpool_limits(limits=settings.torch_threads, user_api="blas")


@functools.lru_cache(maxsize=None)
def thread_pool(name: str, workers: int) -> ThreadPoolExecutor:
    """The process's pool of `workers` threads for one use (`name`; its threads are named csbot-NAME_k),
    made at the first call. onnxruntime, FAISS, SQLite and numpy's larger products release the GIL, so
    such work runs side by side on these threads (models/onnx_encoder.py `map_texts`; `beside`)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"csbot-{name}")


_idle: dict[str, threading.Semaphore] = {}  # one per `beside` thread: free while it has nothing to do


def beside(name: str, fn, *args) -> Future | None:
    """Start `fn(*args)` on the process's one `name` thread if that thread is idle; None when it is busy,
    and the caller runs `fn` itself. So work overlaps the caller's when a core is free, and many callers
    at once (Slack handler threads) never queue behind one another on that thread."""
    gate = _idle.setdefault(name, threading.Semaphore(1))
    if not gate.acquire(blocking=False):
        return None
    try:
        future = thread_pool(f"{name}-beside", 1).submit(fn, *args)
    except BaseException:
        gate.release()
        raise
    future.add_done_callback(lambda _done: gate.release())
    return future


def _after_fork_in_child() -> None:
    # A forked child (a DataLoader worker, say) has none of the parent's pool threads: it starts its own
    # pools, and its `beside` threads are idle.
    thread_pool.cache_clear()
    _idle.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
