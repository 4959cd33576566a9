"""Constrained decoding: a JSON Schema, compiled by llguidance into a grammar, masks the
model's choices at every token, so a JSON output always parses and matches its schema.

llguidance was chosen over outlines-core and xgrammar (README: "Dependencies, and why"): it
installs as one wheel with no dependencies (xgrammar pulls in torch), covers JSON Schema
2020-12 broadly and says exactly which keys it cannot enforce, and computes a mask in
about a hundred microseconds on this machine (BENCHMARKS.md: about 1% of a decode step).
The grammar state lives on the request, not in the KV cache: a preempted request keeps it,
and a cache rebuilt from its log leaves it untouched.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

STRING_LIMIT = 200
"""Characters a string may have when its schema sets no ``maxLength``: greedy decoding
of a small model can repeat itself inside a string forever, and the output must end."""

ARRAY_LIMIT = 24
"""Items an array may have when its schema sets no ``maxItems``, for the same reason."""


def bounded(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with a length limit on strings and arrays that have none."""
    result = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            kinds = node.get("type")
            kinds = kinds if isinstance(kinds, list) else [kinds]
            if "string" in kinds and "maxLength" not in node and "enum" not in node:
                node["maxLength"] = STRING_LIMIT
            if "array" in kinds and "maxItems" not in node:
                node["maxItems"] = max(ARRAY_LIMIT, int(node.get("minItems", 0)))
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(result)
    return result


@functools.lru_cache(maxsize=64)
def _grammar(schema_json: str) -> str:
    from llguidance import LLMatcher

    options = {"whitespace_flexible": False}  # compact JSON: fewer tokens to generate
    return str(
        LLMatcher.grammar_from_json_schema(schema_json, overrides=options)  # type: ignore[arg-type]
    )


class JsonConstraint:
    """The grammar state of one request: which tokens may come next."""

    def __init__(self, tokenizer: Any, schema: dict[str, Any]) -> None:
        import numpy
        from llguidance import LLMatcher

        self._numpy = numpy
        # Not sorted: the order of properties is the order the model writes them in.
        grammar = _grammar(json.dumps(bounded(schema)))
        self._matcher = LLMatcher(tokenizer, grammar, log_level=0)
        self.vocab_size = int(tokenizer.vocab_size)
        if self._matcher.is_error():
            raise ValueError(self._matcher.get_error())

    def allowed(self) -> Any:
        """A boolean array over the vocabulary: True where the token may come next."""
        np = self._numpy
        bits = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        return np.unpackbits(bits, bitorder="little")[: self.vocab_size].astype(bool)

    def consume(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            raise ValueError(f"the grammar refused token {token}: {self._matcher.get_error()}")

    @property
    def finished(self) -> bool:
        """The output is complete: nothing but the end of the reply may follow."""
        return bool(self._matcher.is_stopped())
