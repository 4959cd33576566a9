"""A session: one storage, one backend, one kernel, and the runs that share them."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from flowengine.errors import FlowengineError
from flowengine.kernel import defaults
from flowengine.kernel.backends.base import Backend, BackendError
from flowengine.kernel.backends.registry import DEFAULT as DEFAULT_BACKEND
from flowengine.kernel.backends.registry import BackendSettings, backend_plugin
from flowengine.kernel.kernel import Kernel
from flowengine.kernel.scheduler import SchedulerConfig
from flowengine.plugins import one_line
from flowengine.runtime.interpreter import AgentRun, Checkpoint, RunOutcome, RunSetup, StepEvent
from flowengine.storage.location import default_db
from flowengine.storage.writer import Storage

_USER_MESSAGE = re.compile(
    r"(?:<\|im_start\|>user\n|<\|user\|>)(.*?)(?:<\|im_end\|>|<\|end\|>)", re.S
)
REPLAY_KEY_CHARS = 300


@dataclass
class SessionConfig:
    db: Path = field(default_factory=default_db)
    backend: str = DEFAULT_BACKEND
    """A name from ``kernel/backends/registry.py``: a built-in or a plugin's."""
    model: Path | str | None = None
    """A GGUF file, or for a server the model name it is asked for (the backend says which)."""
    options: dict[str, Any] = field(default_factory=dict)
    """The backend's own options by name (``script``, ``max_batch``, ``base_url``...)."""
    replay: str | None = None
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    pool_size: int | None = None
    """KV caches kept (ctransformers; default ``defaults.POOL_SIZE``), or sequences kept
    (llama-cpp; default twice ``max_batch``, never fewer than ``max_batch``)."""
    context_length: int = defaults.CONTEXT_LENGTH
    threads: int | None = None
    """Model threads; None adapts to how busy the machine is (``kernel/threads.py``)."""
    reuse_prefix: bool = True
    """Keep each run's KV cache between its steps (off only to measure what it saves)."""


def replay_script(storage: Storage, run_id: str) -> object:
    """A script that answers each recorded prompt of ``run_id`` with its recorded reply."""
    from flowengine.kernel.backends.scripted import Rule, Script

    rows = storage.query(
        "SELECT prompt, response FROM llm_requests WHERE run_id = ? AND error IS NULL "
        "ORDER BY created",
        [run_id],
    )
    if not rows:
        raise BackendError(f"{storage.path}: run {run_id} has no recorded LLM requests to replay")
    rules = []
    for prompt, response in rows:
        users = _USER_MESSAGE.findall(prompt)
        key = users[-1][-REPLAY_KEY_CHARS:] if users else prompt[-REPLAY_KEY_CHARS:]
        rules.append(Rule(reply=response, contains=key))
    return Script(rules=rules, default="")


def open_backend(config: SessionConfig, storage: Storage) -> Backend:
    """The configured backend, opened; ``--replay`` answers from a stored run instead."""
    if config.replay:
        from flowengine.kernel.backends.scripted import Script, ScriptedBackend

        script = replay_script(storage, config.replay)
        assert isinstance(script, Script)
        return ScriptedBackend(script, config.context_length)
    plugin = backend_plugin(config.backend)
    settings = BackendSettings(
        model=str(config.model) if config.model is not None else None,
        context_length=config.context_length,
        threads=config.threads,
        pool_size=config.pool_size,
        options=dict(config.options),
    )
    try:
        return plugin.open(settings)
    except FlowengineError:
        raise
    except Exception as exc:  # a plugin's bug is that backend's failure, said in one line
        raise BackendError(f"backend '{plugin.name}' could not open: {one_line(exc)}") from None


class Abandoned(KeyboardInterrupt):
    """A second Ctrl-C: the process quits with these runs mid-step. Each resumes from its
    last stored step (every finished step is durable), as after a crash."""

    def __init__(self, run_ids: list[str], runs: list[AgentRun]) -> None:
        super().__init__(run_ids)
        self.run_ids = run_ids
        self._runs = runs

    def record(self, timeout: float = 2.0) -> None:
        """Mark the runs ``interrupted`` in storage, waiting at most ``timeout`` seconds:
        quitting must not hang on a storage that is stuck. Left ``running`` instead, a
        run still resumes the same way."""

        def mark() -> None:
            for run in self._runs:
                with contextlib.suppress(Exception):
                    run.abandon()

        marking = threading.Thread(target=mark, name="abandon", daemon=True)
        marking.start()
        marking.join(timeout)


def _wait(finished: list[threading.Event]) -> None:
    # Events, not Thread.join: a join that a KeyboardInterrupt cuts short can leave the
    # thread looking finished (is_alive() False) while it still runs.
    for event in finished:
        while not event.wait(0.2):  # short waits keep Ctrl-C responsive
            pass


class Session:
    def __init__(self, config: SessionConfig, storage: Storage | None = None) -> None:
        """``storage``: one already open on ``config.db`` (``resume`` reads the run and
        checks its answer before any model loads); the session closes it."""
        self.config = config
        self.interrupted = False
        """A Ctrl-C stopped this session's runs (``run_all``)."""
        self.storage = storage if storage is not None else Storage(config.db)
        try:
            self.backend = open_backend(config, self.storage)
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

    def run_all(
        self,
        runs: list[tuple[RunSetup, Checkpoint | None]],
        on_step: Callable[[StepEvent], None] | None = None,
        on_interrupt: Callable[[], None] | None = None,
    ) -> list[RunOutcome]:
        """Run these concurrently (one thread each) and return every outcome, in order.

        Runs are isolated: one that cannot even start, or breaks outside its steps, comes
        back as ``failed`` with the reason, and the others go on to their end.

        A first Ctrl-C (KeyboardInterrupt here) asks every run to stop before its next
        step, as ``interrupted``, and waits for them (``on_interrupt`` says so); a second
        one raises :class:`Abandoned`, naming the runs still going."""
        outcomes: list[RunOutcome | None] = [None] * len(runs)
        stop = threading.Event()
        finished = [threading.Event() for _ in runs]
        started: list[AgentRun | None] = [None] * len(runs)

        def work(index: int, setup: RunSetup, checkpoint: Checkpoint | None) -> None:
            try:
                run = started[index] = AgentRun(self.kernel, setup, on_step, stop)
                outcomes[index] = run.run(checkpoint)
            except BaseException as exc:  # reported as this run's failure
                message = str(exc) if isinstance(exc, FlowengineError) else repr(exc)
                outcomes[index] = RunOutcome(
                    setup.run_id,
                    setup.agent.name,
                    "failed",
                    checkpoint.seq if checkpoint else 0,
                    error=f"run {setup.run_id} could not go on: {message}",
                )
            finally:
                finished[index].set()

        threads = [
            threading.Thread(target=work, args=(i, setup, checkpoint), daemon=True)
            for i, (setup, checkpoint) in enumerate(runs)
        ]
        for thread in threads:
            thread.start()
        try:
            _wait(finished)
        except KeyboardInterrupt:
            stop.set()
            self.interrupted = True
            if on_interrupt is not None:
                on_interrupt()
            try:
                _wait(finished)
            except KeyboardInterrupt:
                going = [i for i, outcome in enumerate(outcomes) if outcome is None]
                raise Abandoned(
                    [runs[i][0].run_id for i in going],
                    [run for i in going if (run := started[i]) is not None],
                ) from None
        return [outcome for outcome in outcomes if outcome is not None]

    def close(self) -> None:
        self.kernel.close()
        self.storage.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
