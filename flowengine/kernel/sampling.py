"""Greedy choice of the next token from a row of logits, shared by the local backends.

Deterministic: a mild repetition penalty over the last tokens, then the best token, among
the tokens a grammar allows when there is a mask. Label scores use log-probabilities of the
raw logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

REPETITION_PENALTY = 1.1
RECENT_TOKENS = 64


def greedy(logits: Any, recent: Sequence[int], allowed: Any = None) -> int:
    """The best next token after the repetition penalty over ``recent`` (the last tokens
    of the sequence), among ``allowed`` (a boolean array over the vocabulary) if given."""
    row = np.array(logits, dtype=np.float32, copy=True)
    seen = np.unique(np.asarray(list(recent)[-RECENT_TOKENS:], dtype=np.int64))
    if seen.size:
        values = row[seen]
        row[seen] = np.where(values <= 0, values * REPETITION_PENALTY, values / REPETITION_PENALTY)
    if allowed is not None:
        row[~allowed[: row.size]] = -np.inf
    return int(np.argmax(row))


def log_prob(logits: Any, token: int) -> float:
    """Log-probability of ``token`` under the softmax of ``logits``."""
    row = np.asarray(logits, dtype=np.float64)
    top = float(row.max())
    return float(row[token] - top - np.log(np.exp(row - top).sum()))
