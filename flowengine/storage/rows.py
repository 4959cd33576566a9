"""One frozen dataclass per stored row: the fields are the table's columns, in order.

The DuckDB tables are derived from these classes (``storage/tables.py``): adding a field
adds a column, which needs a migration there. Times are Unix seconds (stored as UTC
TIMESTAMP); ``Json`` fields hold plain Python values and are stored as JSON text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar


class SqlType(str):
    """The DuckDB type of a field whose Python type does not say it."""


Timestamp = Annotated[float, SqlType("TIMESTAMP")]
Json = Annotated[Any, SqlType("JSON")]


@dataclass(frozen=True)
class RunRow:
    """A run, written at its start and end (replacing the row with its run_id)."""

    TABLE: ClassVar[str] = "runs"
    KEY: ClassVar[tuple[str, ...]] = ("run_id",)

    run_id: str
    agent: str
    agent_file: str
    agent_source: str
    inputs: Json
    status: str
    backend: str
    model: str
    scheduler: str
    quantum: int
    created: Timestamp
    updated: Timestamp
    steps: int
    output: str | None
    output_valid: bool | None
    output_errors: Json
    error: str | None
    question: str | None = None
    """While the run is ``waiting``: the question its input step asks a person."""


@dataclass(frozen=True)
class StepRow:
    """A finished step; with ``state`` (the run's memory after it) it is the checkpoint."""

    TABLE: ClassVar[str] = "steps"
    KEY: ClassVar[tuple[str, ...]] = ("run_id", "seq")

    run_id: str
    seq: int
    step_id: str
    kind: str
    started: Timestamp
    ended: Timestamp
    label: str | None
    tool: str | None
    result: Json
    next_step: str | None
    state: Json


@dataclass(frozen=True)
class LLMRequestRow:
    """An LLM request once it ended, with its scheduling figures."""

    TABLE: ClassVar[str] = "llm_requests"
    KEY: ClassVar[tuple[str, ...]] = ()

    request_id: str
    run_id: str
    agent: str
    step_id: str
    step_seq: int
    kind: str
    scheduler: str
    prompt: str
    response: str
    prompt_tokens: int
    output_tokens: int
    evaluated_tokens: int
    progress_dropped: int
    label_scores: Json
    created: Timestamp
    first_start: Timestamp
    ended: Timestamp
    waiting_s: float
    turnaround_s: float
    service_s: float
    slices: int
    preemptions: int
    restores: int
    error: str | None
    reused_tokens: int = 0
    """Prompt tokens the run's KV cache already held (not evaluated again)."""


@dataclass(frozen=True)
class SliceRow:
    """One slice of an LLM request on the model (``started_s`` repeats ``started``)."""

    TABLE: ClassVar[str] = "llm_slices"
    KEY: ClassVar[tuple[str, ...]] = ()

    request_id: str
    run_id: str
    idx: int
    started: Timestamp
    ended: Timestamp
    started_s: float
    tokens: int
    evaluated: int
    restored: bool
    preempted: bool


@dataclass(frozen=True)
class ToolCallRow:
    """A tool call, allowed and made (a denied one is an ErrorRow only)."""

    TABLE: ClassVar[str] = "tool_calls"
    KEY: ClassVar[tuple[str, ...]] = ()

    call_id: str
    run_id: str
    step_id: str
    step_seq: int
    tool: str
    args: Json
    result: Json
    ok: bool
    error: str | None
    started: Timestamp
    duration_s: float


@dataclass(frozen=True)
class ErrorRow:
    """Something that went wrong in a run, with its stable code (``RUN_CODES``)."""

    TABLE: ClassVar[str] = "errors"
    KEY: ClassVar[tuple[str, ...]] = ()

    run_id: str
    step_id: str | None
    step_seq: int | None
    code: str
    message: str
    occurred: Timestamp | None


@dataclass(frozen=True)
class TickRow:
    """One decode of the batched executor (llama-cpp backend): the requests that shared
    it and the tokens it evaluated, ``prompt_tokens`` of them in prompt chunks."""

    TABLE: ClassVar[str] = "batch_ticks"
    KEY: ClassVar[tuple[str, ...]] = ()

    tick: int
    started: Timestamp
    ended: Timestamp
    sequences: int
    tokens: int
    prompt_tokens: int
    scheduler: str
    request_ids: Json


@dataclass(frozen=True)
class TestCaseRow:
    """One attempt of one case of ``flowengine test``: whether it passed, its failures
    (each ``{at, what, expected, actual}``), and the runs it made (``runs.run_id``)."""

    TABLE: ClassVar[str] = "test_cases"
    KEY: ClassVar[tuple[str, ...]] = ()
    __test__: ClassVar[bool] = False  # not a pytest class, whatever its name

    test_run_id: str
    """One ``flowengine test`` command: every case it ran shares it."""
    file: str
    case_name: str
    attempt: int
    passed: bool
    failures: Json
    run_ids: Json
    backend: str
    model: str
    started: Timestamp
    duration_s: float


Row = RunRow | StepRow | LLMRequestRow | SliceRow | ToolCallRow | ErrorRow | TickRow | TestCaseRow
ROW_TYPES: tuple[type[Row], ...] = (
    RunRow,
    StepRow,
    LLMRequestRow,
    SliceRow,
    ToolCallRow,
    ErrorRow,
    TickRow,
    TestCaseRow,
)
