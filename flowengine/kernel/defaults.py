"""Default settings of the kernel and of a run: the one place the library and the CLI read.

No imports, so the CLI can show these in ``--help`` without loading anything heavy.
"""

SCHEDULER = "rr"
"""``fifo`` or ``rr`` (round-robin slices)."""

QUANTUM = 16
"""Tokens a request may generate before it yields to a waiting one (``rr`` only)."""

POOL_SIZE = 4
"""KV caches the context manager keeps, one per request or run that holds one."""

CONTEXT_LENGTH = 2048
"""The model's window in tokens, unless the model's own is smaller."""

MAX_TOKENS = 96
"""Tokens an LLM step may generate."""

JSON_MAX_TOKENS = 512
"""Tokens a step with JSON output may generate at least."""

MEMORY_QUOTA_BYTES = 4 * 1024 * 1024
"""What one run may keep in variables and progress."""

MAX_BATCH = 8
"""Requests the llama-cpp backend decodes together in one pass."""

TICK_TOKENS = 512
"""Tokens one batched pass may evaluate: generated tokens first, then prompt chunks."""

RECENT_RECORDS = 1024
"""Slices and batched decodes the kernel keeps in memory, the newest (for tests and live
views); every one goes to storage as it happens, so a long process's memory stays flat."""
