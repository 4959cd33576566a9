"""One exception hierarchy for flowengine, each error carrying a stable code.

Every error a user can act on derives from :class:`FlowengineError`; the CLI prints its
message in one line and exits with its ``exit_status``. Anything else that escapes is a
bug. ``RUN_CODES`` lists the codes stored in the ``errors`` table while agents run (the
validation codes live in ``flowengine.agentfile.diagnostics.CODES``); the README documents
both, and a test holds the three in step.
"""

from __future__ import annotations

from typing import ClassVar

RUN_CODES: dict[str, str] = {
    "tool-failed": "a tool raised, timed out, got bad arguments or returned something not JSON",
    "tool-denied": "a step called a tool its agent does not declare",
    "llm-failed": "the model backend failed to answer a request",
    "decision-unsupported": "a model server gave neither label log-probabilities nor a "
    "constrained choice for a decision",
    "json-unconstrained": "a model server does not take response_format json_schema; the JSON "
    "output was asked for in the prompt and validated afterwards",
    "template-failed": "a template or when-expression failed while rendering (sandbox, limits)",
    "context-overflow": "a prompt does not fit the model's window even without progress",
    "progress-shortened": "older progress was left out of a prompt to fit the window",
    "memory-quota": "a run stored more variables and progress than its memory quota",
    "output-invalid": "a JSON output does not parse or does not match its schema",
    "run-output-invalid": "the run's final output fails its schema; the run ends with status "
    "output_invalid (exit status 1)",
    "state-invalid": "a value written to a declared state variable fails its reducer or schema",
    "step-recovered": "a failed step went on by its on_error policy (where it went)",
    "step-crashed": "an unexpected error inside a step; it follows the step's retry and on_error",
    "run-crashed": "an unexpected error outside any step; the run failed and others went on",
}
"""Codes of run-time errors, stored in the ``errors`` table. Stable: tools may match on them."""


class FlowengineError(Exception):
    """An error the user can act on. ``code`` is stable; the message says what to do."""

    code: str = "error"
    exit_status: ClassVar[int] = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(FlowengineError):
    """A bad flag, path or combination of them on the command line."""

    code = "usage"
    exit_status = 2


class AgentFileError(FlowengineError):
    """An agent file that cannot be run: it has validation errors, listed in the message."""

    code = "agent-invalid"


class RunError(FlowengineError):
    """A run that cannot start or resume (unknown run id, missing input, ended run)."""

    code = "run-error"


class StorageError(FlowengineError):
    """The DuckDB file cannot be opened, read or written."""

    code = "storage"


class BackendError(FlowengineError):
    """A model that cannot be found, prepared, loaded, or reached."""

    code = "backend"


class RenderError(FlowengineError):
    """A graphics renderer (Graphviz) that is missing or failed."""

    code = "render"


class StepError(FlowengineError):
    """A failure inside one step of a run; ``code`` is one of ``RUN_CODES``."""

    code = "step"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            assert code in RUN_CODES, f"unregistered run-time code {code!r}"
            self.code = code


class ContextOverflow(StepError):
    """A prompt that does not fit the model's window even with no progress log."""

    code = "context-overflow"


class AccessDenied(StepError):
    """A request outside what the run was granted (a tool, another run's memory)."""

    code = "tool-denied"


class MemoryQuotaExceeded(StepError):
    """A run stored more than its memory quota."""

    code = "memory-quota"


class ToolFailure(StepError):
    """Raised by a tool for a failure the caller should see as a plain message."""

    code = "tool-failed"
