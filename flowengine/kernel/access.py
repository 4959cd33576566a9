"""The access manager: a run may call only its agent's tools and read only its own memory."""

from __future__ import annotations

from dataclasses import dataclass

from flowengine.errors import AccessDenied


@dataclass(frozen=True)
class Grant:
    """What one run may do, fixed when the run is registered with the kernel."""

    run_id: str
    agent: str
    tools: frozenset[str]


class AccessManager:
    def __init__(self) -> None:
        self._grants: dict[str, Grant] = {}

    def register(self, grant: Grant) -> None:
        self._grants[grant.run_id] = grant

    def forget(self, run_id: str) -> None:
        self._grants.pop(run_id, None)

    def check_tool(self, run_id: str, tool: str) -> None:
        grant = self._grants.get(run_id)
        if grant is None:
            raise AccessDenied(f"run {run_id} is not registered with the kernel")
        if tool not in grant.tools:
            allowed = ", ".join(sorted(grant.tools)) or "none"
            raise AccessDenied(
                f"agent {grant.agent} does not declare the tool {tool!r} (declared: {allowed}); "
                f"add it to the agent's 'tools' list"
            )

    def check_memory(self, run_id: str, owner: str) -> None:
        if run_id != owner:
            raise AccessDenied(f"run {run_id} may not read the memory of run {owner}")
