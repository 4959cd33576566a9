"""An OpenAI-compatible model server as a backend: settings, HTTP client and chat format.

The kernel does not hold KV caches for such a backend; it hands requests to the remote
executor (``kernel/server_executor.py``), which sends them here. The client is ``httpx`` used
directly rather than the ``openai`` package: the parts that matter here are not in the
OpenAI API (llama.cpp's ``grammar``, vLLM's ``guided_choice``, ``Retry-After``), and we
want the raw bytes of a malformed reply in the error, the stream chunk by chunk, and one
timeout per request.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowengine.kernel.backends.base import BackendError, Capability, Message, chatml
from flowengine.kernel.backends.registry import BackendPlugin, BackendSettings, Option

ENV_BASE_URL = "FLOWENGINE_BASE_URL"
ENV_MODEL = "FLOWENGINE_MODEL"
ENV_API_KEY = "FLOWENGINE_API_KEY"
ENV_MAX_INFLIGHT = "FLOWENGINE_MAX_INFLIGHT"
ENV_TIMEOUT = "FLOWENGINE_REQUEST_TIMEOUT"
ENV_CONFIG = "FLOWENGINE_CONFIG"

DEFAULT_BASE_URL = "http://127.0.0.1:8080/v1"
DEFAULT_MAX_INFLIGHT = 8
DEFAULT_TIMEOUT = 120.0
MAX_RETRY_AFTER = 60.0
"""Longest ``Retry-After`` honoured; a server asking for more fails the request at once."""

_PIECES = re.compile(r"\s+|\w+|[^\w\s]")
_CHATML = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>\n", re.S)


@dataclass(frozen=True)
class ServerSettings:
    """Where the server is and how to talk to it."""

    base_url: str = DEFAULT_BASE_URL
    model: str = ""
    api_key: str | None = None
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    timeout: float = DEFAULT_TIMEOUT
    context_length: int = 2048


def config_file() -> Path:
    """The optional config file: ``$FLOWENGINE_CONFIG``, else flowengine.toml in the
    user's config folder."""
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    from platformdirs import user_config_dir

    return Path(user_config_dir("flowengine")) / "flowengine.toml"


def _file_settings() -> dict[str, Any]:
    path = config_file()
    if not path.is_file():
        if os.environ.get(ENV_CONFIG):
            raise BackendError(f"{ENV_CONFIG}={path}: no such file")
        return {}
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise BackendError(f"{path}: reading the config file needs Python 3.11") from None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BackendError(f"{path}: not a readable TOML file ({exc}); fix or remove it") from None
    section = data.get("openai", {})
    if not isinstance(section, dict):
        raise BackendError(f"{path}: [openai] must be a table of settings")
    known = {"base_url", "model", "api_key_env", "max_inflight", "timeout"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise BackendError(
            f"{path}: unknown setting {unknown[0]!r} under [openai]; "
            f"known: {', '.join(sorted(known))}"
        )
    return section


def resolve_settings(
    base_url: str | None,
    model: str | None,
    max_inflight: int | None,
    timeout: float | None,
    context_length: int,
) -> ServerSettings:
    """Settings from the flags, else the environment, else the config file, else defaults."""
    saved = _file_settings()
    env = os.environ

    def pick(flag: Any, variable: str, key: str, default: Any) -> Any:
        if flag is not None:
            return flag
        if env.get(variable):
            return env[variable]
        return saved.get(key, default)

    key_variable = str(saved.get("api_key_env", ENV_API_KEY))
    try:
        inflight = int(pick(max_inflight, ENV_MAX_INFLIGHT, "max_inflight", DEFAULT_MAX_INFLIGHT))
        seconds = float(pick(timeout, ENV_TIMEOUT, "timeout", DEFAULT_TIMEOUT))
    except (TypeError, ValueError):
        raise BackendError(
            f"{ENV_MAX_INFLIGHT} must be a whole number and {ENV_TIMEOUT} a number of seconds"
        ) from None
    if inflight < 1 or seconds <= 0:
        raise BackendError("max_inflight must be at least 1 and the timeout more than 0")
    url = str(pick(base_url, ENV_BASE_URL, "base_url", DEFAULT_BASE_URL)).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise BackendError(f"base URL {url!r}: give http://HOST:PORT/v1 or https://...")
    return ServerSettings(
        base_url=url,
        model=str(pick(model, ENV_MODEL, "model", "")),
        api_key=env.get(key_variable) or None,
        max_inflight=inflight,
        timeout=seconds,
        context_length=context_length,
    )


class ServerError(Exception):
    """A request the server did not answer properly; the message is one line.

    ``retry_after`` is the server's ``Retry-After`` in seconds when it sent one."""

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        status: int | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
        self.detail = detail
        """The server's whole error message, to see which field it refused."""


@dataclass
class Completion:
    """What came back for one chat completion."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    chunks: int = 0


def parse_chatml(prompt: str) -> list[dict[str, str]]:
    """The messages of a prompt rendered by ``chatml`` (the remote backend's format)."""
    messages = [{"role": role, "content": content} for role, content in _CHATML.findall(prompt)]
    return messages or [{"role": "user", "content": prompt}]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _short(text: str, limit: int = 120) -> str:
    """One printable line of at most ``limit`` characters."""
    text = " ".join(text.split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ChatClient:
    """Chat completions over HTTP, streamed or not; every failure is a ServerError."""

    def __init__(self, settings: ServerSettings) -> None:
        import httpx

        self.settings = settings
        headers = {"Content-Type": "application/json"}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        self._httpx = httpx
        self._client = httpx.Client(
            base_url=settings.base_url,
            headers=headers,
            timeout=httpx.Timeout(settings.timeout, connect=min(settings.timeout, 10.0)),
            limits=httpx.Limits(max_connections=settings.max_inflight + 2),
        )

    def close(self) -> None:
        self._client.close()

    def chat(
        self, body: dict[str, Any], on_text: Callable[[str], None] | None = None
    ) -> Completion:
        """One chat completion; with ``on_text`` it is streamed and each piece passed on."""
        body = {"model": self.settings.model or "default", **body}
        httpx = self._httpx
        where = f"{self.settings.base_url}/chat/completions"
        try:
            if on_text is None:
                response = self._client.post("/chat/completions", json=body)
                self._check_status(response)
                return self._parse_whole(response.content)
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
            with self._client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check_status(response)
                return self._parse_stream(response.iter_lines(), on_text)
        except httpx.ConnectError as exc:
            raise ServerError(f"cannot connect to {where} ({_short(str(exc), 60)})") from None
        except httpx.TimeoutException:
            raise ServerError(
                f"{where} did not answer within {self.settings.timeout:g} s"
            ) from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise ServerError(
                f"{where} broke off the reply ({_short(str(exc), 60) or 'connection closed'})"
            ) from None
        except httpx.HTTPError as exc:
            raise ServerError(f"{where}: {type(exc).__name__}: {_short(str(exc), 80)}") from None

    def _check_status(self, response: Any) -> None:
        status = response.status_code
        if status < 400:
            return
        retry_after = _retry_after(response.headers.get("retry-after"))
        try:
            detail = response.json().get("error", {})
            detail = detail.get("message", detail) if isinstance(detail, dict) else detail
        except (ValueError, AttributeError):
            detail = response.text
        wait = f"; it asked to retry after {retry_after:g} s" if retry_after is not None else ""
        raise ServerError(
            f"the server answered HTTP {status}: {_short(str(detail) or response.reason_phrase)}"
            f"{wait}",
            retry_after,
            status,
            str(detail),
        )

    def _parse_whole(self, content: bytes) -> Completion:
        try:
            data = json.loads(content)
            choice = data["choices"][0]
            message = choice.get("message") or {}
            text = message.get("content") or ""
            if not isinstance(text, str):
                raise TypeError("content is not text")
            completion = Completion(text=text, finish_reason=choice.get("finish_reason"))
            logprobs = choice.get("logprobs") or {}
            completion.logprobs = list(logprobs.get("content") or [])
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            shown = _short(content.decode("utf-8", "replace"), 80)
            raise ServerError(f"the server sent a malformed reply: {shown!r}") from None
        _usage(completion, data.get("usage"))
        return completion

    def _parse_stream(self, lines: Iterator[str], on_text: Callable[[str], None]) -> Completion:
        completion = Completion()
        done = False
        for line in lines:
            if not line.strip() or line.startswith(":"):
                continue
            if not line.startswith("data:"):
                raise ServerError(f"the server sent a malformed stream line: {_short(line, 80)!r}")
            payload = line[5:].strip()
            if payload == "[DONE]":
                done = True
                break
            try:
                data = json.loads(payload)
                if "error" in data:
                    raise ServerError(f"the server failed mid-reply: {_short(str(data['error']))}")
                _usage(completion, data.get("usage"))
                choices = data.get("choices") or []
                if not choices:
                    continue
                choice = choices[0]
                piece = (choice.get("delta") or {}).get("content") or ""
                if choice.get("finish_reason"):
                    completion.finish_reason = choice["finish_reason"]
            except (ValueError, TypeError, AttributeError):
                raise ServerError(
                    f"the server sent a malformed stream chunk: {_short(payload, 80)!r}"
                ) from None
            if piece:
                completion.text += piece
                completion.chunks += 1
                on_text(piece)
        if not done and completion.finish_reason is None:
            raise ServerError("the server's stream ended before the reply was complete")
        return completion


def _usage(completion: Completion, usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    completion.prompt_tokens = usage.get("prompt_tokens", completion.prompt_tokens)
    completion.completion_tokens = usage.get("completion_tokens", completion.completion_tokens)
    details = usage.get("prompt_tokens_details") or {}
    if isinstance(details, dict) and details.get("cached_tokens") is not None:
        completion.cached_tokens = details["cached_tokens"]


class OpenAIBackend:
    """A model behind an OpenAI-compatible server.

    Prompts are kept as ChatML text (what is stored, replayed and measured) and sent as
    chat messages. Token counts before a request are estimates (words and punctuation,
    which over-count a subword tokenizer's), used only to keep prompts inside the window;
    the counts stored are the server's own ``usage``.
    """

    name = "openai"
    capabilities = frozenset(
        {Capability.SERVER, Capability.CONSTRAINED_DECODING, Capability.LABEL_LOGPROBS}
    )
    """SERVER: the kernel serves it with its executor for servers
    (``kernel/server_executor.py``); JSON is constrained by the server when it can."""
    eos_token_id = -1

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.model_name = settings.model or "(the server's default model)"
        self.context_length = settings.context_length
        self.client = ChatClient(settings)

    def encode(self, text: str) -> list[int]:
        return [len(piece) for piece in _PIECES.findall(text)]

    def label_tokens(self, label: str) -> list[int]:
        # The server scores labels by their text; these only size the request.
        return self.encode(label)

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        return chatml(messages)

    def grammar_tokenizer(self) -> Any:
        return None

    def close(self) -> None:
        self.client.close()


def _open(settings: BackendSettings) -> OpenAIBackend:
    return OpenAIBackend(
        resolve_settings(
            settings.option("base_url"),
            settings.model,
            settings.option("max_inflight"),
            settings.option("request_timeout"),
            settings.context_length,
        )
    )


PLUGIN = BackendPlugin(
    name="openai",
    help="an OpenAI-compatible server (--base-url, --model NAME)",
    capabilities=OpenAIBackend.capabilities,
    open=_open,
    model="name",
    options=(
        Option(
            "--base-url",
            "the server, e.g. http://127.0.0.1:8080/v1 (default: $FLOWENGINE_BASE_URL, the "
            "config file, or http://127.0.0.1:8080/v1); the key is read from "
            "$FLOWENGINE_API_KEY",
            metavar="URL",
        ),
        Option(
            "--max-inflight",
            "requests sent to the server at once, since servers batch (default: "
            "$FLOWENGINE_MAX_INFLIGHT, the config file, or 8)",
            kind="count",
            metavar="N",
        ),
        Option(
            "--request-timeout",
            "seconds one request may take (default: $FLOWENGINE_REQUEST_TIMEOUT, the config "
            "file, or 120)",
            kind="seconds",
            metavar="S",
        ),
    ),
)
