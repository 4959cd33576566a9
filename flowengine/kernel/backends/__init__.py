"""LLM backends behind one small interface (see ``base``)."""

from flowengine.kernel.backends.base import Backend, BackendError, Message, ModelContext

__all__ = ["Backend", "BackendError", "Message", "ModelContext"]
