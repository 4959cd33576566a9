"""LLM backends behind one small interface (see ``base``)."""

from flowengine.kernel.backends.base import Backend, BackendError, KVCache, Message

__all__ = ["Backend", "BackendError", "KVCache", "Message"]
