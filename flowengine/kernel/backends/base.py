"""The small interface every LLM backend implements, and the chat prompt format."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from flowengine.errors import BackendError

__all__ = ["Backend", "BackendError", "Message", "ModelContext", "chatml"]


@dataclass(frozen=True)
class Message:
    role: str
    content: str


class ModelContext(Protocol):
    """One KV cache. Only the kernel's worker thread touches it.

    ``tokens`` is what the cache holds; after ``feed`` the next-token distribution is that
    of the last token fed.
    """

    tokens: list[int]

    def feed(self, tokens: Sequence[int]) -> int:
        """Make the cache hold exactly ``tokens``, reusing the common prefix.

        Returns how many tokens had to be evaluated.
        """
        ...

    def reset(self) -> None:
        """Empty the cache."""
        ...

    def next_token(self) -> int:
        """The greedy choice for the next token (deterministic)."""
        ...

    def log_prob(self, token: int) -> float:
        """Log-probability of ``token`` as the next one."""
        ...


class Backend(Protocol):
    name: str
    model_name: str
    context_length: int
    eos_token_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, tokens: Sequence[int]) -> str: ...

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        """The text the model expects for these messages, ending where the reply begins."""
        ...

    def new_context(self) -> ModelContext:
        """A fresh KV cache; weights are shared between contexts of one backend."""
        ...

    def close(self) -> None: ...


def chatml(messages: Sequence[Message]) -> str:
    """ChatML, the format of SmolLM2 and many small instruct models."""
    parts = [f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages]
    return "".join(parts) + "<|im_start|>assistant\n"
