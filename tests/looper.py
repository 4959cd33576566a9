"""The Looper agent: rounds of a model step and a `when` decision, then a terminal step;
the many-step workload of the storage, crash and durability tests (and bench/durable.py)."""

from __future__ import annotations


def looper(loops: int) -> str:
    """The agent's YAML: ``loops`` rounds (``2 * loops + 1`` steps, ``loops`` of them asking
    the model), ending with "finished after N rounds: stop"."""
    return f"""\
name: Looper
description: Works in rounds until it has done {loops}.
steps:
  Work:
    type: process
    instruction: Do round {{{{ visits.get('Work', 0) + 1 }}}}.
    next: Check
  Check:
    type: decision
    question: Enough rounds?
    branches: {{stop: Done, again: Work}}
    when:
      stop: "visits['Work'] >= {loops}"
    default: again
  Done:
    type: terminal
    output: "finished after {{{{ visits['Work'] }}}} rounds: {{{{ last }}}}"
"""
