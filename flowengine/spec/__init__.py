"""Spec layer: agent files to plain data. Safe YAML with positions, the JSON Schema,
plain-words diagnostics and the dataclass model."""

from flowengine.spec.diagnostics import Diagnostic, Position, Severity
from flowengine.spec.loader import Loaded, load_agent, parse_agent
from flowengine.spec.model import Agent, Input, Step

__all__ = [
    "Agent",
    "Diagnostic",
    "Input",
    "Loaded",
    "Position",
    "Severity",
    "Step",
    "load_agent",
    "parse_agent",
]
