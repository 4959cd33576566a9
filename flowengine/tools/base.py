"""What a tool is: its static metadata and callable (Tool), and one call's outcome (ToolResult).

Nothing here imports a tool, the registry or DuckDB, so every other tools module (and any
plugin) can import it without a cycle. A tool's own failure is ``flowengine.errors.ToolFailure``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flowengine.errors import ToolFailure

__all__ = ["DEFAULT_TIMEOUT", "Argument", "Tool", "ToolFailure", "ToolResult"]

DEFAULT_TIMEOUT = 10.0
"""Seconds a tool may take when it does not say."""

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
"""The names an agent file can declare (``$defs/name`` in the agent schema)."""


@dataclass(frozen=True)
class Argument:
    """One argument of a tool, read from its JSON Schema, for listings and checks."""

    name: str
    type: str
    """The JSON type(s), e.g. ``string`` or ``integer|null``; ``one of: a, b`` for an enum;
    ``any`` when the schema does not say."""
    required: bool
    description: str = ""
    default: Any = None
    has_default: bool = False


@dataclass(frozen=True)
class Tool:
    """A tool agents can call: static metadata, and the function that does the work.

    The metadata (name, description, the JSON Schema of the arguments object, timeout) is
    all that ``validate`` and ``flowengine tools`` read; ``function`` is called only when a
    run calls the tool, so anything costly (a database, a model) belongs inside it.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    """JSON Schema of the arguments object: ``{"type": "object", "properties": ...}``."""
    function: Callable[..., Any]
    timeout: float = DEFAULT_TIMEOUT
    result: dict[str, Any] | None = None
    """JSON Schema of what the tool returns (None: not declared). ``flowengine tools``
    shows it, and ``validate`` checks templates that read its fields against it, where
    it lists its ``properties`` and closes them (``additionalProperties: false``)."""

    def __post_init__(self) -> None:
        # Checked here so that a plugin's mistake names the plugin when it is loaded,
        # not a confusing failure in some agent's run later.
        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name):
            raise ValueError(
                f"tool name {self.name!r} is not a valid name: use letters, digits and "
                "underscores, not starting with a digit"
            )
        if not isinstance(self.description, str):
            raise ValueError(f"tool {self.name}: the description must be text")
        if not isinstance(self.parameters, dict) or self.parameters.get("type") != "object":
            raise ValueError(
                f"tool {self.name}: parameters must be a JSON Schema with 'type': 'object'"
            )
        if not callable(self.function):
            raise ValueError(f"tool {self.name}: function is not callable")
        if not isinstance(self.timeout, int | float) or not 0 < self.timeout < float("inf"):
            raise ValueError(f"tool {self.name}: timeout must be a positive number of seconds")
        if self.result is not None and not isinstance(self.result, dict):
            raise ValueError(f"tool {self.name}: result must be a JSON Schema (a mapping)")

    def result_fields(self) -> list[Argument]:
        """The top-level fields of the result, when its schema is an object that lists them."""
        found = (self.result or {}).get("properties")
        if not isinstance(found, dict):
            return []
        required = (self.result or {}).get("required") or []
        return [
            Argument(
                name,
                describe_type(schema),
                name in required,
                str(schema.get("description", "")) if isinstance(schema, dict) else "",
            )
            for name, schema in found.items()
        ]

    @property
    def properties(self) -> dict[str, Any]:
        """Argument name -> its JSON Schema."""
        found = self.parameters.get("properties")
        return found if isinstance(found, dict) else {}

    @property
    def required(self) -> list[str]:
        found = self.parameters.get("required")
        return [name for name in found if isinstance(name, str)] if isinstance(found, list) else []

    @property
    def takes_other_arguments(self) -> bool:
        """Whether arguments not named in ``properties`` are allowed."""
        return self.parameters.get("additionalProperties", True) is not False

    def arguments(self) -> list[Argument]:
        """The named arguments, required ones first, each in schema order."""
        required = self.required
        found = [
            Argument(
                name,
                describe_type(schema),
                name in required,
                str(schema.get("description", "")) if isinstance(schema, dict) else "",
                schema.get("default") if isinstance(schema, dict) else None,
                isinstance(schema, dict) and "default" in schema,
            )
            for name, schema in self.properties.items()
        ]
        found += [Argument(name, "any", True) for name in required if name not in self.properties]
        return sorted(found, key=lambda argument: not argument.required)


def describe_type(schema: Any) -> str:
    """A short name for the values a JSON Schema accepts: ``string``, ``one of: a, b``."""
    if not isinstance(schema, dict):
        return "any"
    if isinstance(schema.get("enum"), list):
        return "one of: " + ", ".join(str(value) for value in schema["enum"])
    if "const" in schema:
        return f"exactly {schema['const']}"
    kind = schema.get("type")
    if isinstance(kind, str):
        return kind
    if isinstance(kind, list) and kind:
        return "|".join(str(k) for k in kind)
    return "any"


@dataclass
class ToolResult:
    """One call of a tool: its arguments, and its value or the reason it failed."""

    call_id: str
    tool: str
    args: dict[str, Any]
    ok: bool
    value: Any = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    duration: float = 0.0
