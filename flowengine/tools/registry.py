"""The tool manager: calls tools by name, with their arguments checked and a timeout each."""

from __future__ import annotations

import concurrent.futures
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from flowengine.errors import ToolFailure
from flowengine.tools.base import Tool, ToolResult

MAX_RESULT_CHARS = 1_000_000


def _not_data(name: str, value: Any) -> str | None:
    """Why a tool's return value cannot be kept (not JSON data, or too large), or None."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"{name} returned something that is not JSON data ({type(exc).__name__}: {exc})"
    if len(text) > MAX_RESULT_CHARS:
        return f"{name} returned {len(text):,} characters of JSON; at most {MAX_RESULT_CHARS:,}"
    return None


class ToolRegistry:
    """Tools by name. ``call`` never raises for a tool's own failure: it returns it."""

    def __init__(self, tools: list[Tool] | None = None, workers: int = 4) -> None:
        self._tools: dict[str, Tool] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="tool")
        for tool in tools or []:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        self._tools[tool.name] = tool

    def tools(self) -> dict[str, Tool]:
        """The registered tools by name: what ``validate`` checks a run's agent against."""
        return dict(self._tools)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def call(self, name: str, args: Mapping[str, Any]) -> ToolResult:
        from jsonschema import Draft202012Validator

        result = ToolResult(call_id=uuid.uuid4().hex[:16], tool=name, args=dict(args), ok=False)
        tool = self._tools.get(name)
        if tool is None:
            result.error = f"no tool named {name!r}; known tools: {', '.join(self.names())}"
            return result
        problems = sorted(
            Draft202012Validator(tool.parameters).iter_errors(dict(args)), key=lambda e: e.path
        )
        if problems:
            where = "/".join(str(part) for part in problems[0].path) or "arguments"
            result.error = f"bad arguments for {name}: {where}: {problems[0].message}"
            return result
        started = time.perf_counter()
        future = self._pool.submit(tool.function, **args)
        try:
            value = future.result(timeout=tool.timeout)
            result.error = _not_data(name, value)
            if result.error is None:
                result.value, result.ok = value, True
        except concurrent.futures.TimeoutError:
            result.error = f"{name} did not finish within {tool.timeout:g} s"
        except ToolFailure as exc:
            result.error = str(exc)
        except Exception as exc:  # a tool's bug must not stop the kernel
            result.error = f"{name} failed: {type(exc).__name__}: {exc}"
        result.duration = time.perf_counter() - started
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
