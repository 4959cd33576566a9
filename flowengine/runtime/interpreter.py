"""The interpreter: walks an agent's compiled graph, one step at a time, through the kernel.

Each finished step is checkpointed to storage (its result and what it changed in the
run's memory; the memory is the fold of a run's steps, ``storage/checkpoints.py``) before
the next begins, so a run whose process dies can be resumed from its last step.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from jinja2 import Undefined

from flowengine.agentfile.model import TOOL_RESULT, Agent, Step
from flowengine.agentfile.reducers import UNSET, ReducerError, combine, is_named
from flowengine.agentfile.schema_validation import unenforceable, with_values
from flowengine.agentfile.templates import (
    compiled_expression,
    compiled_template,
    plain_data,
    render_bounded,
)
from flowengine.errors import AccessDenied, ContextOverflow, MemoryQuotaExceeded, StepError
from flowengine.graph.build import build_graph, successor
from flowengine.kernel import defaults
from flowengine.kernel.backends.base import Message
from flowengine.kernel.kernel import Kernel
from flowengine.kernel.llm_request import LLMRequest
from flowengine.kernel.memory import RunMemory
from flowengine.runtime import prompts
from flowengine.steps.base import Ran, StepKind
from flowengine.steps.registry import kind_of
from flowengine.storage.checkpoints import step_change
from flowengine.storage.rows import RunRow, StepRow
from flowengine.storage.tables import to_json

FINAL_STATUSES = ("completed", "output_invalid", "max_steps", "max_visits", "failed")


RECOVERABLE = ("tool-failed", "llm-failed", "step-crashed")
"""Failures a step's ``retry`` and ``on_error`` apply to; the others are mistakes in the
agent file or limits, which retrying cannot mend."""


@dataclass(frozen=True)
class StepEvent:
    """What the CLI shows as a step finishes."""

    run_id: str
    agent: str
    seq: int
    step_id: str
    kind: str
    label: str | None
    tool: str | None
    result: Any


@dataclass
class RunOutcome:
    run_id: str
    agent: str
    status: str
    steps: int
    output: Any = None
    output_valid: bool | None = None
    output_errors: list[str] = field(default_factory=list)
    error: str | None = None
    path: list[str] = field(default_factory=list)
    question: str | None = None
    """While ``waiting``: what the run's input step asks a person."""
    waiting_step: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "agent": self.agent,
            "status": self.status,
            "steps": self.steps,
            "output": self.output,
            "output_valid": self.output_valid,
            "output_errors": self.output_errors,
            "error": self.error,
            "path": self.path,
            "question": self.question,
            "waiting_step": self.waiting_step,
        }


@dataclass
class RunSetup:
    """Everything needed to start or resume a run; stored in the ``runs`` table."""

    agent: Agent
    source_text: str
    task: str
    inputs: dict[str, Any] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    max_tokens: int = defaults.MAX_TOKENS
    graph: nx.DiGraph = field(init=False, repr=False)
    """The compiled flow: the only place the interpreter learns where a step leads."""

    def __post_init__(self) -> None:
        self.graph = build_graph(self.agent)


@dataclass
class Checkpoint:
    """Where a resumed run picks up: the step to run next and the memory before it."""

    seq: int
    next_step: str | None
    memory: dict[str, Any]
    path: list[str]
    answer: Any = None
    """The answer for the input step the run waits at (``next_step``), when one is given."""
    has_answer: bool = False


class _KindContext:
    """The interpreter as a step kind sees it (``flowengine.steps.base.RunContext``): the
    kinds ask for what their step needs, and never import the runtime."""

    def __init__(self, run: AgentRun, outcome: RunOutcome) -> None:
        self._run = run
        self._outcome = outcome

    def process(self, step: Step) -> tuple[Any, Any]:
        return self._run._process(step)

    def decide(self, step: Step) -> str:
        return self._run._decide(step)

    def take_answer(self) -> Any:
        return self._run._take_answer()

    def finish(self, step: Step) -> Any:
        return self._run._terminal(step, self._outcome)

    def render(self, template: str, step: Step) -> str:
        return self._run._render(template, step)

    def evaluate_set(self, step: Step) -> dict[str, Any]:
        return self._run._evaluate_set(step)


class AgentRun:
    def __init__(
        self,
        kernel: Kernel,
        setup: RunSetup,
        on_step: Callable[[StepEvent], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.kernel = kernel
        self.stop = stop
        """Set (by a first Ctrl-C) to end the run before its next step, resumable."""
        self.setup = setup
        self.agent = setup.agent
        self.run_id = setup.run_id
        self.graph = setup.graph
        self._tool_result: Any = None
        """The tool's result while a tool step's own templates render (``tool_result``)."""
        self._bound: dict[str, Any] = {}
        """Names bound while a step's ``set`` values are evaluated (``result``)."""
        self._tool_error_kept = False
        """The running step's tool failed and it went on (``on_error: continue``)."""
        self._state_validators: dict[str, Any] = {}
        self.on_step = on_step
        self.memory: RunMemory = kernel.register_run(self.run_id, self.agent.name, self.agent.tools)
        self.seq = 0
        self.path: list[str] = []
        self.created = time.time()
        self._answer_given: tuple[Any] | None = None
        """The answer for the next input step, until that step takes it."""

    @property
    def step_seq(self) -> int:
        """The ``seq`` of the step now running (its row's, once stored): what the LLM
        requests, tool calls and errors recorded while it runs carry as ``step_seq``."""
        return self.seq + 1

    # -- the loop -------------------------------------------------------------------

    def run(self, checkpoint: Checkpoint | None = None) -> RunOutcome:
        current = self.agent.start_step
        if checkpoint is not None:
            self.memory.restore(checkpoint.memory)
            self.seq = checkpoint.seq
            self.path = list(checkpoint.path)
            current = checkpoint.next_step
            if checkpoint.has_answer:
                self._answer_given = (checkpoint.answer,)
        outcome = RunOutcome(self.run_id, self.agent.name, "running", self.seq)
        self._save_run(outcome)
        try:
            while current is not None:
                step = self.agent.steps[current]
                if self.stop is not None and self.stop.is_set():
                    # Between steps: everything before is stored, nothing of this one is.
                    outcome.status = "interrupted"
                    outcome.error = (
                        f"run {self.run_id} stopped by Ctrl-C after step #{self.seq}, before "
                        f"'{step.id}'; `flowengine resume {self.run_id}` continues"
                    )
                    break
                stop = self._guard(step)
                if stop is not None:
                    outcome.status, outcome.error = stop
                    break
                kind = self._kind(step)
                if kind.asks_person and self._answer_given is None:
                    # A person answers: the run stops here, and `resume --answer` goes on.
                    outcome.status = "waiting"
                    outcome.waiting_step = step.id
                    outcome.question = self._render(step.ask or "", step)
                    break
                current = self._run_step(step, outcome)
            if outcome.status == "running":
                # Resumed after its terminal step was stored but before its end was: the
                # run had ended, with that step's result as its output.
                outcome.status = "completed"
                if self.memory.progress:
                    outcome.output = self.memory.progress[-1]["result"]
        except Exception as exc:  # whatever it was, this run ends here, recorded
            failure = (
                exc
                if isinstance(exc, StepError)
                else StepError(
                    f"run {self.run_id} crashed after step #{self.seq}: "
                    f"{type(exc).__name__}: {exc}",
                    "run-crashed",
                )
            )
            outcome.status = "failed"
            outcome.error = failure.message
            if failure.code == "llm-failed":
                # The model (often a server) did not answer: nothing after the last step is
                # lost, and the run can go on from there once the model is back.
                outcome.status = "interrupted"
                outcome.error += f"; `flowengine resume {self.run_id}` continues once it answers"
            # If the storage itself failed, the run's row below still says why.
            with contextlib.suppress(Exception):
                self.kernel.record_error(
                    self.run_id, current or "", self.step_seq, failure.code, failure.message
                )
        finally:
            outcome.steps = self.seq
            outcome.path = list(self.path)
            try:
                self._save_run(outcome)
            finally:
                self.kernel.end_run(self.run_id)
        return outcome

    def abandon(self) -> None:
        """Store the run as ``interrupted`` while a step is under way (a second Ctrl-C
        quits the process): the steps stored stand, and ``resume`` goes on after them."""
        outcome = RunOutcome(
            self.run_id,
            self.agent.name,
            "interrupted",
            self.seq,
            error=f"run {self.run_id} was quit by a second Ctrl-C during step #{self.step_seq}; "
            f"`flowengine resume {self.run_id}` goes on after step #{self.seq}",
            path=list(self.path),
        )
        self._save_run(outcome)

    def _attempt(self, step: Step, outcome: RunOutcome) -> tuple[Ran, str | None]:
        """Run one step: what it gave, and the next step id.

        An unexpected exception is the step's failure (``step-crashed``), never the
        process's; like a tool failure it is stored and retried ``retry`` times."""
        kind = self._kind(step)
        for attempt in range(step.retry + 1):
            try:
                # The kind says how its step runs, through the context below.
                ran = kind.run(step, _KindContext(self, outcome))
                following = successor(self.graph, step.id, ran.leave_by) if ran.leave_by else None
                return ran, following
            except StepError:
                raise
            except Exception as exc:  # isolated to this step, and stored
                message = f"step '{step.id}' crashed: {type(exc).__name__}: {exc}"
                # Each attempt is stored, as each failed tool call is.
                self.kernel.record_error(
                    self.run_id, step.id, self.step_seq, "step-crashed", message
                )
                if attempt < step.retry:
                    continue
                raise StepError(message, "step-crashed") from exc
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _recover(self, step: Step, failure: StepError) -> str | None:
        """Where a step goes when its failure is to be lived with; recorded as such."""
        policy = step.error_policy
        if policy == "continue":
            kind = self._kind(step)
            if kind.branches_by_label:
                label = kind.continue_label(step)
                if label is None:
                    raise failure
                target = successor(self.graph, step.id, label)
                where = f"took the default branch '{label}'"
            else:
                target = successor(self.graph, step.id, "next")
                where = "went on with the error as the step's result"
        else:
            target = successor(self.graph, step.id, "on_error")
            where = f"went to '{policy}' (on_error)"
        self.kernel.record_error(
            self.run_id, step.id, self.step_seq, "step-recovered", f"{failure.message}; {where}"
        )
        return target

    def _kind(self, step: Step) -> StepKind:
        kind = kind_of(step.type)
        if kind is None:  # validate refuses such an agent before it runs
            raise StepError(f"step '{step.id}' has no known type", "step-crashed")
        return kind

    def _take_answer(self) -> Any:
        """The answer a resume brought for the input step now running; taken once."""
        assert self._answer_given is not None
        (answer,) = self._answer_given
        self._answer_given = None
        return answer

    def _guard(self, step: Step) -> tuple[str, str] | None:
        limit = self.agent.step_limit
        if self.seq >= limit:
            return "max_steps", f"stopped after {limit} steps (max_steps) before '{step.id}'"
        visits = self.memory.visits.get(step.id, 0)
        if step.max_visits is not None and visits >= step.max_visits:
            return (
                "max_visits",
                f"step '{step.id}' would run a {_ordinal(visits + 1)} time; its max_visits is "
                f"{step.max_visits}",
            )
        return None

    def _run_step(self, step: Step, outcome: RunOutcome) -> str | None:
        started = time.time()
        label: str | None = None
        result: Any
        saved: Any
        assigned: dict[str, Any] | None = None
        recovered = False
        try:
            ran, following = self._attempt(step, outcome)
            result, saved, label, assigned = ran.result, ran.saved, ran.label, ran.assigned
        except StepError as failure:
            if failure.code not in RECOVERABLE or step.error_policy == "fail":
                raise
            following = self._recover(step, failure)
            result = saved = {"error": failure.message}
            recovered = True
        memory = self.memory
        recovered = recovered or self._tool_error_kept
        self._tool_error_kept = False
        changed = self._assign(step, result, saved, assigned, recovered)
        memory.progress.append({"step": step.id, "result": result})
        memory.visits[step.id] = memory.visits.get(step.id, 0) + 1
        try:
            memory.check_quota()
        except MemoryQuotaExceeded as exc:
            raise StepError(str(exc), "memory-quota") from None
        self.seq += 1
        self.path.append(step.id)
        outcome.steps = self.seq
        if following is None:
            outcome.status = "completed"
            if outcome.output_valid is False:
                # The run ended, but its output is not what its schema promises.
                outcome.status = "output_invalid"
                outcome.error = (
                    f"the final output of step '{step.id}' does not match its schema: "
                    + "; ".join(outcome.output_errors[:3])
                )
                self.kernel.record_error(
                    self.run_id, step.id, self.step_seq, "run-output-invalid", outcome.error
                )
        self._checkpoint(step, started, label, result, following, outcome, changed)
        if self.on_step is not None:
            self.on_step(
                StepEvent(
                    self.run_id,
                    self.agent.name,
                    self.seq,
                    step.id,
                    step.type,
                    label,
                    step.tool,
                    result,
                )
            )
        return following

    # -- state ----------------------------------------------------------------------

    def _assign(
        self,
        step: Step,
        result: Any,
        saved: Any,
        assigned: dict[str, Any] | None,
        recovered: bool = False,
    ) -> dict[str, Any]:
        """Write the step's ``save_as`` and then its ``set`` values, each through its
        variable's reducer; what the step changed (name -> new value).

        After a failure the step went on from (``on_error``, or a tool's error under
        ``on_error: continue``), its result is ``{"error": ...}``: an undeclared
        ``save_as`` takes it, as a later rule reads it, but a declared variable keeps its
        value, since its reducer and schema are for what the step makes. ``set`` runs, with
        that result (guard a value with ``result.error is defined``)."""
        changed: dict[str, Any] = {}
        if step.save_as and not (recovered and step.save_as in self.agent.state):
            changed[step.save_as] = self._write(step.save_as, saved, step, ("save_as",))
        if step.set:
            values = assigned if assigned is not None else self._evaluate_set(step, result, saved)
            for name, value in values.items():
                changed[name] = self._write(name, value, step, ("set", name))
        return changed

    def _evaluate_set(self, step: Step, result: Any = None, saved: Any = None) -> dict[str, Any]:
        """The step's ``set`` values, evaluated (all before any is applied), with
        ``result`` bound to the step's result and, in a tool step, ``tool_result``."""
        self._bound = {"result": result}
        if step.tool:
            self._bound[TOOL_RESULT] = saved
        try:
            return {
                name: self._render_value(value, step, f"set '{name}'")
                for name, value in step.set.items()
            }
        finally:
            self._bound = {}

    def _write(self, name: str, value: Any, step: Step, field: tuple[str, ...]) -> Any:
        """Set variable ``name`` from ``value`` through its reducer, checked against its
        declared schema; the new value. An undeclared variable is replaced, as always."""
        spec = self.agent.state.get(name)
        if spec is None:
            self.memory.variables[name] = value
            return value
        current = self.memory.variables.get(name, spec.default if spec.has_default else UNSET)
        if is_named(spec.reducer):
            try:
                new = combine(spec.reducer, current, value)
            except ReducerError as exc:
                message = f"state '{name}' cannot take {value!r}: {exc}"
                raise self._state_error(step, field, message) from None
        else:
            new = self._reduce(spec.reducer, None if current is UNSET else current, value, step)
        errors = self._state_errors(name, new)
        if errors:
            raise self._state_error(
                step,
                field,
                f"state '{name}' would become {_short(new)}, which does not match its schema: "
                + "; ".join(errors[:3]),
            )
        self.memory.variables[name] = new
        return new

    def _reduce(self, expression: str, current: Any, value: Any, step: Step) -> Any:
        try:
            compiled = compiled_expression(expression)
            new = render_bounded(lambda: compiled(current=current, value=value))
            if isinstance(new, Undefined):
                new._fail_with_undefined_error()
            return plain_data(new)
        except Exception as exc:
            raise StepError(
                f"step '{step.id}': the reducer {expression!r} failed: {exc}", "template-failed"
            ) from None

    def _state_errors(self, name: str, value: Any) -> list[str]:
        spec = self.agent.state[name]
        if spec.schema is None:
            return []
        validator = self._state_validators.get(name)
        if validator is None:
            from jsonschema import Draft202012Validator

            validator = self._state_validators[name] = Draft202012Validator(spec.schema)
        return schema_errors(validator, value)

    def _state_error(self, step: Step, field: tuple[str, ...], message: str) -> StepError:
        line, column = self.agent.value_at("steps", step.id, *field)
        return StepError(
            f"{self.agent.file}:{line}:{column}: step '{step.id}': {message}", "state-invalid"
        )

    # -- step kinds -----------------------------------------------------------------

    def _process(self, step: Step) -> tuple[Any, Any]:
        if step.tool:
            args = {
                name: self._render_value(value, step, f"tool argument '{name}'")
                for name, value in step.args.items()
            }
            for _attempt in range(step.retry + 1):
                try:
                    called = self.kernel.call_tool(
                        self.run_id, step.id, self.step_seq, step.tool, args
                    )
                except AccessDenied as exc:
                    raise StepError(f"step '{step.id}': {exc}", "tool-denied") from None
                if called.ok:
                    break
            if not called.ok:
                tries = f" (tried {step.retry + 1} times)" if step.retry else ""
                message = f"step '{step.id}': tool {step.tool} failed{tries}: {called.error}"
                if step.error_policy != "continue":
                    raise StepError(message, "tool-failed")
                self._tool_error_kept = True
            value = called.value if called.ok else {"error": called.error}
            if not step.instruction:
                return value, value
            self._tool_result = value
            try:
                answer, _ = self._answer(step, data=(step.tool, value))
            finally:
                self._tool_result = None
            return answer, value
        answer, _ = self._answer(step)
        return answer, answer

    def _decide(self, step: Step) -> str:
        labels = list(step.branches)
        if step.when:
            for label, expression in step.when.items():
                if self._evaluate(expression, step):
                    return label
            if step.default is not None:
                return step.default
            # No rule matched and there is no default: the model picks, as without 'when'.
        question = self._render(step.question or "", step)
        examples = [(example.input, example.label) for example in step.examples]
        request = self._request(step, "choose", prompts.decision_ask(question, labels, examples))
        request.labels = labels
        request.label_tokens = self.kernel.label_tokens(labels)
        # Calibration against this prompt with its content replaced by "N/A" (the same
        # description, examples and labels) helped with worked examples, which bias a
        # small model towards the labels they show, and hurt without them on the held-out
        # decisions of bench/decisions.py; hence its default.
        calibrate = step.calibrate if step.calibrate is not None else bool(examples)
        if calibrate:
            system = self._render(self.agent.description, step) if self.agent.description else ""
            content_free = prompts.content_free_messages(
                system, self.agent.progress_for(step) != "none", labels, examples
            )
            request.content_free_tokens = self.kernel.chat_tokens(content_free)
        return self._submit(step, request).response

    def _terminal(self, step: Step, outcome: RunOutcome) -> Any:
        if step.output_data is not None or (step.output is not None and step.format == "json"):
            # A mapping or list of templates, or a lone {{ expression }}, keeps its types;
            # text is JSON to parse (``{{ x | tojson }}``, as before).
            source = step.output_data if step.output_data is not None else step.output
            value = self._render_value(source, step, "the output")
            if isinstance(value, str):
                outcome.output, errors = self._checked_json(step, value)
            else:
                outcome.output, errors = value, self._checked_value(step, value)
        elif step.output is None:
            outcome.output, errors = self._answer(step)
        else:
            outcome.output, errors = self._render(step.output, step), []
        if step.format == "json":
            outcome.output_valid = not errors
            outcome.output_errors = errors
        return outcome.output

    def _answer(self, step: Step, data: tuple[str, Any] | None = None) -> tuple[Any, list[str]]:
        """The model's answer to the step's instruction: text, or with ``format: json``
        the JSON value (constrained to the step's schema while it is generated, where the
        backend can) and what is wrong with it (nothing, when constrained)."""
        ask = self._render(step.instruction or "", step)
        if step.format != "json":
            return self._generate(step, ask, data), []
        text = self._generate(step, prompts.json_ask(ask, step.schema), data, json_mode=True)
        return self._checked_json(step, text)

    def _output_schema(self, step: Step) -> dict[str, Any] | None:
        """The step's output schema, with each templated value (``enum: "{{ ... }}"``,
        ``minItems``...) computed now."""
        if step.schema is None:
            return None

        def compute(key: str, template: str) -> Any:
            value = self._render_value(template, step, f"the schema's {key}")
            if key == "enum":
                scalars = (str, int, float, bool, type(None))
                if isinstance(value, list) and value and all(isinstance(v, scalars) for v in value):
                    return list(dict.fromkeys(value))
                wanted = "a non-empty list of strings or numbers"
            elif key == "pattern":
                if isinstance(value, str) and value:
                    patterns.append(template)
                    return value
                wanted = "a regular expression (text)"
            else:
                bound = key in ("minimum", "maximum")
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                if number and (bound or (isinstance(value, int) and value >= 0)):
                    return value
                wanted = "a number" if bound else "a whole number >= 0"
            raise StepError(
                f"step '{step.id}': the schema's {key} {template!r} gave {value!r}; it must "
                f"give {wanted}",
                "template-failed",
            )

        patterns: list[str] = []
        computed = dict(with_values(step.schema, compute))
        # A computed pattern is checked now, as validate checks a literal one, so one the
        # grammar cannot hold fails this step in one line rather than its LLM request.
        problem = unenforceable(computed) if patterns else []
        if problem:
            raise StepError(
                f"step '{step.id}': the schema's pattern {patterns[0]!r} gave a schema "
                f"constrained decoding cannot enforce: {problem[0]}",
                "template-failed",
            )
        return computed

    def _checked_json(self, step: Step, text: str) -> tuple[Any, list[str]]:
        value, errors = parse_json_output(text, self._output_schema(step))
        self._record_invalid(step, errors)
        return (value if value is not None else text), errors

    def _checked_value(self, step: Step, value: Any) -> list[str]:
        schema = self._output_schema(step)
        if schema is None:
            return []
        from jsonschema import Draft202012Validator

        errors = schema_errors(Draft202012Validator(schema), value)
        self._record_invalid(step, errors)
        return errors

    def _record_invalid(self, step: Step, errors: list[str]) -> None:
        for message in errors:
            self.kernel.record_error(self.run_id, step.id, self.step_seq, "output-invalid", message)

    # -- LLM calls ------------------------------------------------------------------

    def _request(
        self,
        step: Step,
        kind: str,
        ask: str,
        data: tuple[str, Any] | None = None,
        prefill: str = "",
        max_tokens: int | None = None,
    ) -> LLMRequest:
        setting = self.agent.progress_for(step)
        progress = prompts.progress_to_show(self.memory.progress, setting)
        already_dropped = self.memory.progress_dropped if setting == "all" else 0
        # With no progress, the step's templates name all it needs (``{{ task }}`` too).
        task = self.setup.task if setting != "none" else None
        reserve = (max_tokens or self.setup.max_tokens) if kind == "generate" else 16

        system = self._render(self.agent.description, step) if self.agent.description else ""

        def chat(dropped: int) -> list[Message]:
            return prompts.messages(system, task, progress, ask, dropped, data)

        try:
            text, tokens, dropped = self.kernel.fit_prompt(
                chat, prefill, reserve, len(progress), start=already_dropped
            )
        except ContextOverflow as exc:
            raise StepError(f"step '{step.id}': {exc}", "context-overflow") from None
        if dropped > already_dropped:
            if setting == "all":
                self.memory.progress_dropped = dropped
            self.kernel.record_error(
                self.run_id,
                step.id,
                self.step_seq,
                "progress-shortened",
                f"left out the {dropped} oldest progress entries to fit the context window "
                "(a block at once, so that later prompts keep the same beginning)",
            )
        return LLMRequest(
            run_id=self.run_id,
            agent=self.agent.name,
            step_id=step.id,
            step_seq=self.step_seq,
            kind="choose" if kind == "choose" else "generate",
            prompt=text,
            prompt_tokens=tokens,
            max_tokens=max_tokens or self.setup.max_tokens,
            prefill=prefill,
            progress_dropped=dropped,
        )

    def _generate(
        self, step: Step, ask: str, data: tuple[str, Any] | None = None, json_mode: bool = False
    ) -> str:
        # A model server is sent the schema and constrains the reply itself where it can.
        constrained = json_mode and self.kernel.constrains_json
        request = self._request(
            step,
            "generate",
            ask,
            data,
            # Without a grammar, writing the start of the JSON keeps a small model from
            # wandering into prose; with one, the grammar does that.
            prefill=json_prefill(step.schema) if json_mode and not constrained else "",
            max_tokens=max(self.setup.max_tokens, defaults.JSON_MAX_TOKENS) if json_mode else None,
        )
        if constrained:
            request.schema = self._output_schema(step) or {}
        return self._submit(step, request).response.strip()

    def _submit(self, step: Step, request: LLMRequest) -> LLMRequest:
        done = self.kernel.run_request(request)
        for _retry in range(step.retry):
            if done.error is None:
                break
            done = self.kernel.run_request(done.retry())
        if done.error is not None:
            tries = f" (tried {step.retry + 1} times)" if step.retry else ""
            raise StepError(
                f"step '{step.id}': the model failed{tries}: {done.error}", done.error_code
            )
        return done

    # -- templates ------------------------------------------------------------------

    def _template_variables(self) -> dict[str, Any]:
        memory = self.memory
        values = {name: spec.default for name, spec in self.agent.inputs.items()}
        values.update(self.setup.inputs)
        values.update(
            (name, spec.default) for name, spec in self.agent.state.items() if spec.has_default
        )
        values.update(memory.variables)
        values.update(
            task=self.setup.task,
            last=memory.progress[-1]["result"] if memory.progress else "",
            progress=[dict(entry) for entry in memory.progress],
            # A step not run yet has 0 visits, so `visits['Step 9'] + 1` works from the start.
            visits={**dict.fromkeys(self.agent.steps, 0), **memory.visits},
        )
        if self._tool_result is not None:
            values[TOOL_RESULT] = self._tool_result
        values.update(self._bound)
        return values

    def _render(self, source: str, step: Step) -> str:
        try:
            template = compiled_template(source)
            variables = self._template_variables()
            return render_bounded(lambda: template.render(variables))
        except Exception as exc:  # sandbox violations, undefined names, type errors
            raise StepError(
                f"step '{step.id}': the template failed: {exc}", "template-failed"
            ) from None

    def _render_value(self, value: Any, step: Step, name: str) -> Any:
        """A tool argument or schema value (``name`` says which, for messages): strings are
        templates; ``"{{ x }}"`` alone keeps x's type, which must be plain JSON data (a
        nested undefined name or a function fails the step)."""
        if isinstance(value, dict):
            return {key: self._render_value(item, step, name) for key, item in value.items()}
        if isinstance(value, list):
            return [self._render_value(item, step, name) for item in value]
        if not isinstance(value, str):
            return value
        stripped = value.strip()
        if stripped.startswith("{{") and stripped.endswith("}}") and stripped.count("{{") == 1:
            return self._evaluate(stripped[2:-2], step, argument=name)
        return self._render(value, step)

    def _evaluate(self, expression: str, step: Step, argument: str | None = None) -> Any:
        try:
            compiled = compiled_expression(expression)
            variables = self._template_variables()
            value = render_bounded(lambda: compiled(**variables))
            if isinstance(value, Undefined):  # an unsafe or missing name: raise here, not later
                value._fail_with_undefined_error()
            return value if argument is None else plain_data(value)
        except Exception as exc:
            what = f"the expression {expression!r}"
            if argument is not None:
                what = f"{argument} ({expression.strip()!r})"
            raise StepError(f"step '{step.id}': {what} failed: {exc}", "template-failed") from None

    # -- storage --------------------------------------------------------------------

    def _checkpoint(
        self,
        step: Step,
        started: float,
        label: str | None,
        result: Any,
        following: str | None,
        outcome: RunOutcome,
        saved: dict[str, Any],
    ) -> None:
        """Store the finished step, the run's checkpoint; returns once it is durable.
        ``saved``: the variables the step changed, with their new values."""
        # What the step changed, not the whole memory: a row per step of the whole memory
        # made storage grow with the square of a run's length (storage/checkpoints.py).
        self.kernel.record_step(
            StepRow(
                run_id=self.run_id,
                seq=self.seq,
                step_id=step.id,
                kind=step.type,
                started=started,
                ended=time.time(),
                label=label,
                tool=step.tool,
                result=result,
                next_step=following,
                state=step_change(saved, self.memory.progress_dropped),
            )
        )
        # The step row is the checkpoint; the run's own row is written at its start and end
        # only, because rewriting it (with the agent source) every step tripled the cost.

    def _save_run(self, outcome: RunOutcome) -> None:
        """Store the run's row (at its start and end); returns once it is durable."""
        self.kernel.record_run(self._run_row(outcome))

    def _run_row(self, outcome: RunOutcome) -> RunRow:
        """The run's row in ``runs``: the only place one is built."""
        kernel = self.kernel
        backend, model = kernel.model_info
        output = outcome.output
        return RunRow(
            run_id=self.run_id,
            agent=self.agent.name,
            agent_file=self.agent.file,
            agent_source=self.setup.source_text,
            inputs={
                "task": self.setup.task,
                **self.setup.inputs,
                "max_tokens": self.setup.max_tokens,
            },
            status=outcome.status,
            backend=backend,
            model=model,
            scheduler=kernel.scheduler.policy,
            quantum=kernel.scheduler.quantum,
            created=self.created,
            updated=time.time(),
            steps=outcome.steps,
            # text output is stored as is, a JSON output as its JSON text
            output=output if output is None or isinstance(output, str) else to_json(output),
            output_valid=outcome.output_valid,
            output_errors=outcome.output_errors,
            error=outcome.error,
            question=outcome.question,
        )


def json_prefill(schema: dict[str, Any] | None) -> str:
    """How a JSON reply starts: the opening brace, and the first required key if known.

    Writing the start for the model keeps a small model from wandering into prose."""
    if schema and schema.get("type") == "object" and schema.get("required"):
        return '{"' + str(schema["required"][0]) + '": '
    if not schema or schema.get("type") == "object":
        return "{"
    return "[" if schema.get("type") == "array" else ""


def parse_json_output(text: str, schema: dict[str, Any] | None) -> tuple[Any, list[str]]:
    """The JSON value at the start of ``text`` and what is wrong with it, if anything."""
    try:
        value = json.loads(text)  # a constrained reply is exactly one JSON value
    except json.JSONDecodeError:
        start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
        if start < 0:
            return None, ["the output is not JSON: it has no object or array"]
        try:
            value, _ = json.JSONDecoder().raw_decode(text, start)
        except json.JSONDecodeError as exc:
            return None, [f"the output is not valid JSON: {exc.msg} at character {exc.pos}"]
    if schema is None:
        return value, []
    from jsonschema import Draft202012Validator

    return value, schema_errors(Draft202012Validator(schema), value)


def schema_errors(validator: Any, value: Any) -> list[str]:
    """What is wrong with ``value`` under a JSON Schema validator, one line each."""
    errors = []
    for error in sorted(validator.iter_errors(value), key=lambda e: e.path):
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        errors.append(f"{where}: {error.message}")
    return errors


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th ... 11th, 12th, 13th ... 21st."""
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
