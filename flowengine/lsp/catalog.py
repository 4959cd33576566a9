"""Tool names and arguments for completion and hover, read lazily from one place.

``tool_catalog`` reads the same catalog as ``validate`` and ``flowengine tools``: the
built-in tools and those of installed plugins.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ToolInfo:
    name: str
    description: str
    parameters: dict[str, Any]
    """JSON Schema of the arguments object."""

    @property
    def summary(self) -> str:
        return self.description.split("\n")[0][:80]

    def markdown(self) -> str:
        """The tool's description and arguments, for a hover."""
        lines = [f"**{self.name}** (tool)", "", self.description]
        properties = self.parameters.get("properties", {})
        required = set(self.parameters.get("required", []))
        if properties:
            lines += ["", "Arguments:"]
            for name, spec in properties.items():
                kind = spec.get("type", "any") if isinstance(spec, dict) else "any"
                about = spec.get("description", "") if isinstance(spec, dict) else ""
                need = "required" if name in required else "optional"
                lines.append(f"- `{name}` ({kind}, {need}){': ' + about if about else ''}")
        else:
            lines += ["", "Arguments: none"]
        return "\n".join(lines)


@functools.cache
def tool_catalog() -> dict[str, ToolInfo]:
    """The tools an agent can list, by name."""
    from flowengine.tools.catalog import available_tools

    return {
        tool.name: ToolInfo(tool.name, tool.description, json.loads(json.dumps(tool.parameters)))
        for tool in available_tools().values()
    }
