"""A test session: the selected cases of many test files, run on one kernel, each attempt
stored in ``test_cases`` beside the runs it made; and the JUnit XML report for CI."""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from flowengine.kernel import defaults
from flowengine.kernel.backends.base import Backend
from flowengine.kernel.kernel import Kernel
from flowengine.runtime.interpreter import StepEvent
from flowengine.runtime.session import SessionConfig, open_backend
from flowengine.storage.rows import TestCaseRow
from flowengine.storage.writer import Storage
from flowengine.testing.checks import Failure
from flowengine.testing.runner import CaseResult, run_case
from flowengine.testing.spec import Case, TestFile


@dataclass
class Selected:
    test: TestFile
    case: Case

    @property
    def id(self) -> str:
        return f"{self.test.path}::{self.case.name}"


def select(tests: list[TestFile], keyword: str | None) -> list[Selected]:
    """Every case, or those whose ``FILE::NAME`` contains ``keyword`` (any case);
    ``not WORD`` keeps the others."""
    chosen = [Selected(test, case) for test in tests for case in test.cases]
    if not keyword:
        return chosen
    negate = keyword.startswith("not ")
    word = keyword[4:].strip().casefold() if negate else keyword.casefold()
    return [s for s in chosen if (word in s.id.casefold()) != negate]


class TestSession:
    """One storage and one kernel; the model backend is opened only when a selected case
    has a step that asks it with no mocked reply."""

    __test__ = False  # not a pytest class

    def __init__(self, config: SessionConfig, needs_model: bool, only_mocks: bool) -> None:
        self.config = config
        self.only_mocks = only_mocks or not needs_model
        self.storage = Storage(config.db)
        try:
            self.backend = self._open()
        except BaseException:
            self.storage.close()
            raise
        self.kernel = Kernel(
            self.backend,
            config.scheduler,
            self.storage,
            pool_size=config.pool_size or defaults.POOL_SIZE,
            reuse_prefix=config.reuse_prefix,
        )
        self.test_run_id = uuid.uuid4().hex[:12]

    def _open(self) -> Backend:
        if self.only_mocks:
            # Every reply is mocked: the scripted backend only tokenizes the prompts.
            from flowengine.kernel.backends.scripted import Script, ScriptedBackend

            return ScriptedBackend(Script(rules=[], default=""), self.config.context_length)
        return open_backend(self.config, self.storage)

    @property
    def model_name(self) -> str:
        return "mocks only" if self.only_mocks else self.backend.model_name

    def run(
        self,
        selected: Selected,
        attempt: int,
        max_tokens: int | None,
        on_step: Callable[[StepEvent], None] | None = None,
    ) -> CaseResult:
        result = run_case(
            selected.test,
            selected.case,
            self.kernel,
            self.storage,
            attempt=attempt,
            only_mocks=self.only_mocks,
            max_tokens=max_tokens,
            on_step=on_step,
        )
        backend, model = self.kernel.model_info
        self.storage.record_test_case(
            TestCaseRow(
                test_run_id=self.test_run_id,
                file=result.file,
                case_name=result.case,
                attempt=attempt,
                passed=result.passed,
                failures=[
                    {
                        "at": f"{result.file}:{f.expectation.at.line}:{f.expectation.at.column}",
                        "what": f.expectation.what,
                        "expected": f.expected,
                        "actual": f.actual,
                    }
                    for f in result.failures
                ],
                run_ids=result.run_ids,
                backend="mock" if self.only_mocks else backend,
                model=model,
                started=time.time() - result.duration,
                duration_s=result.duration,
            )
        )
        self.storage.commit()
        return result

    def close(self) -> None:
        self.kernel.close()
        self.storage.close()

    def __enter__(self) -> TestSession:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@dataclass
class CaseSummary:
    """A case over its attempts: pass@1 (the share of attempts that passed) and pass^N
    (whether every one of the N did, as in tau-bench)."""

    selected: Selected
    results: list[CaseResult] = field(default_factory=list)

    @property
    def passes(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def pass_at_1(self) -> float:
        return self.passes / len(self.results) if self.results else 0.0

    @property
    def pass_all(self) -> bool:
        return bool(self.results) and self.passes == len(self.results)


def junit_xml(
    summaries: list[CaseSummary], seconds: float, broken: dict[str, list[str]] | None = None
) -> bytes:
    """JUnit XML: a ``testsuite`` per test file, a ``testcase`` per attempt; a test file
    with errors is a suite whose one ``testcase`` is an ``error`` listing them."""
    root = ET.Element("testsuites", name="flowengine test", time=f"{seconds:.3f}")
    for file, lines in (broken or {}).items():
        suite = ET.SubElement(
            root, "testsuite", name=file, tests="1", failures="0", errors="1", skipped="0"
        )
        case = ET.SubElement(suite, "testcase", classname=file, name="(the test file)")
        error = ET.SubElement(case, "error", message=lines[0], type="test-file")
        error.text = "\n".join(lines)
    files: dict[str, list[CaseResult]] = {}
    for summary in summaries:
        files.setdefault(str(summary.selected.test.path), []).extend(summary.results)
    for file, results in files.items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=file,
            tests=str(len(results)),
            failures=str(sum(not r.passed for r in results)),
            errors="0",
            skipped="0",
            time=f"{sum(r.duration for r in results):.3f}",
        )
        repeated = len({r.attempt for r in results}) > 1
        for result in results:
            name = f"{result.case} [{result.attempt}]" if repeated else result.case
            case = ET.SubElement(
                suite, "testcase", classname=file, name=name, time=f"{result.duration:.3f}"
            )
            if result.failures:
                lines = [failure_text(file, f) for f in result.failures]
                first = result.failures[0]
                failure = ET.SubElement(
                    case,
                    "failure",
                    message=(
                        f"{first.expectation.what}: expected {first.expected}, got {first.actual}"
                    ),
                    type="expectation",
                )
                failure.text = "\n".join(lines)
            if result.run_ids:
                ET.SubElement(case, "system-out").text = "runs: " + ", ".join(result.run_ids)
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def failure_text(file: str, failure: Failure) -> str:
    """A failure as printed: where its expectation is written, expected, actual."""
    at = failure.expectation.at
    return (
        f"{file}:{at.line}:{at.column}: expect {failure.expectation.what}\n"
        f"  expected: {failure.expected}\n"
        f"  actual:   {failure.actual}"
    )
