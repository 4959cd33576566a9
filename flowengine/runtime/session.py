"""A session: one storage, one backend, one kernel, and the runs that share them."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from flowengine.errors import FlowengineError
from flowengine.kernel import defaults
from flowengine.kernel.backends.base import Backend, BackendError
from flowengine.kernel.kernel import Kernel
from flowengine.kernel.scheduler import SchedulerConfig
from flowengine.runtime.interpreter import AgentRun, Checkpoint, RunOutcome, RunSetup, StepEvent
from flowengine.storage.location import default_db
from flowengine.storage.writer import Storage

BACKENDS = ("ctransformers", "llama-cpp", "openai", "scripted")
_USER_MESSAGE = re.compile(
    r"(?:<\|im_start\|>user\n|<\|user\|>)(.*?)(?:<\|im_end\|>|<\|end\|>)", re.S
)
REPLAY_KEY_CHARS = 300


@dataclass
class SessionConfig:
    db: Path = field(default_factory=default_db)
    backend: str = "ctransformers"
    model: Path | None = None
    script: Path | None = None
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
    base_url: str | None = None
    """For ``openai``: the server (None: the environment, the config file, the default)."""
    model_name: str | None = None
    """For ``openai``: the model the server is asked for."""
    max_inflight: int | None = None
    """For ``openai``: requests sent to the server at once."""
    request_timeout: float | None = None
    """For ``openai``: seconds one request may take."""
    max_batch: int = defaults.MAX_BATCH
    """For ``llama-cpp``: requests decoded together in one pass."""
    tick_tokens: int = defaults.TICK_TOKENS
    """For ``llama-cpp``: tokens one pass may evaluate."""


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
    if config.backend == "scripted" or config.replay:
        from flowengine.kernel.backends.scripted import Script, ScriptedBackend

        if config.replay:
            script = replay_script(storage, config.replay)
        elif config.script is not None:
            script = Script.from_file(config.script)
        else:
            raise BackendError("--backend scripted needs --script FILE or --replay RUN_ID")
        assert isinstance(script, Script)
        return ScriptedBackend(script, config.context_length)
    if config.backend == "openai":
        from flowengine.kernel.backends.openai import OpenAIBackend, resolve_settings

        settings = resolve_settings(
            config.base_url,
            config.model_name,
            config.max_inflight,
            config.request_timeout,
            config.context_length,
        )
        return OpenAIBackend(settings)
    if config.backend == "llama-cpp":
        from flowengine.kernel.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(
            config.model,
            config.context_length,
            config.threads,
            sequences=max(config.pool_size or 2 * config.max_batch, config.max_batch),
            max_batch=config.max_batch,
            tick_tokens=config.tick_tokens,
        )
    from flowengine.kernel.backends.ctransformers import LocalBackend

    return LocalBackend(config.model, config.context_length, config.threads)


class Session:
    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.storage = Storage(config.db)
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
    ) -> list[RunOutcome]:
        """Run these concurrently (one thread each) and return every outcome, in order.

        Runs are isolated: one that cannot even start, or breaks outside its steps, comes
        back as ``failed`` with the reason, and the others go on to their end."""
        outcomes: list[RunOutcome | None] = [None] * len(runs)

        def work(index: int, setup: RunSetup, checkpoint: Checkpoint | None) -> None:
            try:
                outcomes[index] = AgentRun(self.kernel, setup, on_step).run(checkpoint)
            except BaseException as exc:  # reported as this run's failure
                message = str(exc) if isinstance(exc, FlowengineError) else repr(exc)
                outcomes[index] = RunOutcome(
                    setup.run_id,
                    setup.agent.name,
                    "failed",
                    checkpoint.seq if checkpoint else 0,
                    error=f"run {setup.run_id} could not go on: {message}",
                )

        threads = [
            threading.Thread(target=work, args=(i, setup, checkpoint), daemon=True)
            for i, (setup, checkpoint) in enumerate(runs)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)  # short waits keep Ctrl-C responsive
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
