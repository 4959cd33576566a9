"""The small interface every LLM backend implements, and the chat prompt format."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from flowengine.errors import BackendError

__all__ = [
    "Backend",
    "BackendError",
    "CachingBackend",
    "Capability",
    "KVCache",
    "Message",
    "chatml",
]


@dataclass(frozen=True)
class Message:
    role: str
    content: str


class KVCache(Protocol):
    """One KV cache over the model's weights. Only the kernel's worker thread touches it.

    The context manager decides what to evaluate (``kernel/context.py``); a cache only
    evaluates and forgets. After ``evaluate`` the next-token distribution is that of the
    last token evaluated.
    """

    def evaluate(self, tokens: Sequence[int]) -> None:
        """Evaluate ``tokens`` after what the cache holds, in one call (batched as the
        backend batches a call)."""
        ...

    def truncate(self, length: int) -> None:
        """Forget everything after the first ``length`` tokens."""
        ...

    def next_token(self, allowed: Any = None) -> int:
        """The greedy choice for the next token (deterministic); with ``allowed`` (a boolean
        array over the vocabulary), the greedy choice among the allowed tokens."""
        ...

    def log_prob(self, token: int) -> float:
        """Log-probability of ``token`` as the next one."""
        ...


class Capability(enum.Enum):
    """What a backend can do; the kernel and the runtime choose their path by these."""

    CONSTRAINED_DECODING = "constrained decoding"
    """JSON and patterns are enforced token by token while the reply is generated."""
    LABEL_LOGPROBS = "label scoring"
    """A decision's labels are scored by their log-probabilities."""
    BATCHING = "batching"
    """Requests of several runs are decoded together (kernel/batching.py drives it)."""
    KV_REUSE = "KV reuse"
    """A run keeps its KV cache between steps, so a step reads only what is new."""
    CHAT_TEMPLATE = "chat template"
    """Prompts use the model file's own chat template."""
    SERVER = "model server"
    """Requests go to a server, many in flight (kernel/server_executor.py drives it)."""


class Backend(Protocol):
    """What every backend gives: its prompt format, its token counts, and what it can do.
    How requests reach its model depends on its capabilities (see ``kernel/kernel.py``)."""

    name: str
    capabilities: frozenset[Capability]
    """What it can do: the kernel picks its executor by these, never by its type."""
    model_name: str
    context_length: int
    eos_token_id: int

    def encode(self, text: str) -> list[int]: ...

    def label_tokens(self, label: str) -> list[int]:
        """The tokens a decision's label is scored as, when it is the reply."""
        ...

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        """The text the model expects for these messages, ending where the reply begins."""
        ...

    def grammar_tokenizer(self) -> Any:
        """The vocabulary for llguidance's constrained decoding, or None when this backend
        cannot constrain its output (then JSON is asked for and validated afterwards)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class CachingBackend(Backend, Protocol):
    """A backend the kernel serves itself, one request at a time, from a pool of KV caches
    (``kernel/context.py``): every backend that is neither ``SERVER`` nor ``BATCHING``."""

    def decode(self, tokens: Sequence[int]) -> str: ...

    def new_cache(self) -> KVCache:
        """A fresh KV cache; weights are shared between contexts of one backend."""
        ...


def chatml(messages: Sequence[Message]) -> str:
    """ChatML, the format of SmolLM2 and many small instruct models."""
    parts = [f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages]
    return "".join(parts) + "<|im_start|>assistant\n"
