"""Spec layer: agent files to plain data. Safe YAML with positions, the JSON Schema,
plain-words diagnostics and the dataclass model."""

from flowengine.agentfile.diagnostics import Diagnostic, Position, Severity
from flowengine.agentfile.loader import Loaded, load_agent, parse_agent
from flowengine.agentfile.model import Agent, Input, Step

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
