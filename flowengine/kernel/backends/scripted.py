"""A deterministic stand-in for a model: replies come from rules in a file.

For fast tests, and for replaying a run recorded in DuckDB. It tokenizes into words so
the scheduler slices and preempts it exactly as it does a real model.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowengine.kernel.backends.base import BackendError, Capability, Message
from flowengine.kernel.backends.registry import BackendPlugin, BackendSettings, Option

_PIECES = re.compile(r"<\|[a-z_]+\|>|\s+|\w+|[^\w\s]")
REPLY_START = "<|assistant|>"
END = "<|end|>"
UNLIKELY = -20.0


@dataclass
class Rule:
    """Reply ``reply`` to any prompt containing ``contains`` (all prompts when empty).

    With ``error``, the first ``fail_times`` requests it matches fail with that message
    instead (all of them when ``fail_times`` is None): a model fault, for tests."""

    reply: str
    contains: str = ""
    exact: str | None = None
    error: str | None = None
    fail_times: int | None = None

    def matches(self, prompt: str) -> bool:
        return self.exact == prompt if self.exact is not None else self.contains in prompt


@dataclass
class Script:
    rules: list[Rule] = field(default_factory=list)
    default: str = "OK"
    token_delay: float = 0.0
    """Seconds each generated token takes, so that tests can make requests overlap."""

    def reply_to(self, prompt: str) -> str:
        rule = self.rule_for(prompt)
        return rule.reply if rule is not None else self.default

    def rule_for(self, prompt: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.matches(prompt)), None)

    @classmethod
    def from_file(cls, path: Path) -> Script:
        """Read ``{"default": ..., "rules": [{"contains": ..., "reply": ...}]}``; a rule may
        also have ``"prompt"`` (the whole prompt), ``"error"`` and ``"fail_times"``."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise BackendError(f"{path}: cannot read the script ({exc.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            line = getattr(exc, "lineno", 1)
            column = getattr(exc, "colno", 1)
            raise BackendError(
                f"{path}:{line}:{column}: the script is not valid JSON; "
                'write {"default": "...", "rules": [{"contains": "...", "reply": "..."}]}'
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("rules", []), list):
            raise BackendError(
                f'{path}:1:1: a script is an object with "rules" (a list) and "default"'
            )
        rules = []
        for index, item in enumerate(data.get("rules", [])):
            if not isinstance(item, dict) or not isinstance(item.get("reply", ""), str):
                raise BackendError(f'{path}: rule {index + 1} needs a "reply" string')
            fail_times = item.get("fail_times")
            if fail_times is not None and not (isinstance(fail_times, int) and fail_times >= 0):
                raise BackendError(f'{path}: rule {index + 1}: "fail_times" is a count (0 or more)')
            rules.append(
                Rule(
                    reply=item.get("reply", ""),
                    contains=str(item.get("contains", "")),
                    exact=item.get("prompt"),
                    error=str(item["error"]) if item.get("error") is not None else None,
                    fail_times=fail_times,
                )
            )
        delay = data.get("token_delay", 0)
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) or not 0 <= delay <= 1:
            raise BackendError(f'{path}: "token_delay" is seconds a token, from 0 to 1')
        return cls(rules=rules, default=str(data.get("default", "OK")), token_delay=float(delay))


class ScriptedCache:
    def __init__(self, backend: ScriptedBackend) -> None:
        self._backend = backend
        self.tokens: list[int] = []

    def evaluate(self, tokens: Sequence[int]) -> None:
        tokens = list(tokens)
        if self._backend.reply_start_id in tokens:  # a new prompt: a scripted fault may fire
            self._backend.fault_for(self.tokens + tokens)
        self.tokens += tokens

    def truncate(self, length: int) -> None:
        del self.tokens[length:]

    def _expected(self) -> tuple[list[int], int]:
        start = self._backend.reply_start_id
        last = max(i for i, token in enumerate(self.tokens) if token == start)
        prompt = self._backend.decode_all(self.tokens[: last + 1])
        reply = self._backend.encode(self._backend.script.reply_to(prompt))
        return [*reply, self._backend.eos_token_id], len(self.tokens) - last - 1

    def next_token(self, allowed: Any = None) -> int:
        if self._backend.script.token_delay:
            time.sleep(self._backend.script.token_delay)
        reply, produced = self._expected()
        return reply[min(produced, len(reply) - 1)]

    def log_prob(self, token: int) -> float:
        return 0.0 if token == self.next_token() else UNLIKELY


class ScriptedBackend:
    name = "scripted"
    capabilities = frozenset({Capability.LABEL_LOGPROBS, Capability.KV_REUSE})
    model_name = "scripted"

    def __init__(self, script: Script, context_length: int = 4096) -> None:
        self.script = script
        self.context_length = context_length
        self._vocabulary: dict[str, int] = {}
        self._pieces: list[str] = []
        self._lock = threading.Lock()
        self.eos_token_id = self._id(END)
        self.reply_start_id = self._id(REPLY_START)

    def _id(self, piece: str) -> int:
        with self._lock:
            if piece not in self._vocabulary:
                self._vocabulary[piece] = len(self._pieces)
                self._pieces.append(piece)
            return self._vocabulary[piece]

    def encode(self, text: str) -> list[int]:
        return [self._id(piece) for piece in _PIECES.findall(text)]

    def label_tokens(self, label: str) -> list[int]:
        return self.encode(label)

    def decode_all(self, tokens: Sequence[int]) -> str:
        return "".join(self._pieces[token] for token in tokens)

    def decode(self, tokens: Sequence[int]) -> str:
        return "".join(self._pieces[t] for t in tokens if t != self.eos_token_id)

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        text = "".join(f"<|{m.role}|>{m.content}{END}" for m in messages)
        return text + REPLY_START

    def fault_for(self, tokens: Sequence[int]) -> None:
        """Fail this request if a rule with ``error`` matches its prompt and has failures
        left; called once for each new prompt fed to a context."""
        rule = self.script.rule_for(self.decode_all(tokens))
        if rule is None or rule.error is None:
            return
        with self._lock:
            if rule.fail_times is not None:
                if rule.fail_times <= 0:
                    return
                rule.fail_times -= 1
        raise BackendError(rule.error)

    def grammar_tokenizer(self) -> Any:
        return None  # replies are scripted text: JSON is validated after the fact

    def new_cache(self) -> ScriptedCache:
        return ScriptedCache(self)

    def close(self) -> None:
        pass


def _open(settings: BackendSettings) -> ScriptedBackend:
    script = settings.option("script")
    if script is None:
        raise BackendError("--backend scripted needs --script FILE or --replay RUN_ID")
    return ScriptedBackend(Script.from_file(Path(script)), settings.context_length)


PLUGIN = BackendPlugin(
    name="scripted",
    help="replies from --script FILE, for tests",
    capabilities=ScriptedBackend.capabilities,
    open=_open,
    model=None,
    options=(
        Option(
            "--script",
            '{"default": ..., "rules": [{"contains": ..., "reply": ...}]}',
            kind="file",
            metavar="FILE",
            required=True,
        ),
    ),
)
