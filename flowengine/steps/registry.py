"""Type name -> step kind: the one place every part of flowengine asks what a kind means."""

from __future__ import annotations

from functools import cache

from flowengine.steps import decision, process, terminal
from flowengine.steps import input as input_kind  # the module, not the built-in
from flowengine.steps.base import StepKind

BUILTIN: tuple[StepKind, ...] = (process.KIND, decision.KIND, terminal.KIND, input_kind.KIND)
"""flowengine's own kinds, in the order the schema and the drawings list them."""


@cache
def kinds() -> dict[str, StepKind]:
    """Every kind, by its YAML ``type``."""
    return {kind.name: kind for kind in BUILTIN}


def kind_of(name: str) -> StepKind | None:
    """The kind named ``name``; None for a step without a (known) type."""
    return kinds().get(name)
