"""A small Language Server Protocol client over stdio, as an editor drives a server."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any


class LspClient:
    """Starts a language server, speaks JSON-RPC with Content-Length framing, and keeps
    the diagnostics the server publishes for each document."""

    def __init__(self, command: list[str], root: Path, settings: dict[str, Any] | None = None):
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self.settings = settings or {}
        self._next_id = 0
        self._responses: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.diagnostics: dict[str, list[dict[str, Any]]] = {}
        self._published = threading.Condition()
        self._versions: dict[str, int] = {}
        threading.Thread(target=self._read, daemon=True).start()
        self.capabilities = self.request(
            "initialize",
            {
                "processId": None,
                "rootUri": root.as_uri(),
                "capabilities": {
                    "textDocument": {
                        "publishDiagnostics": {},
                        "completion": {"completionItem": {"snippetSupport": False}},
                        "hover": {"contentFormat": ["markdown", "plaintext"]},
                        "definition": {},
                    },
                    "workspace": {"configuration": True},
                },
                "initializationOptions": self.settings,
            },
        )["capabilities"]
        self.notify("initialized", {})
        if self.settings:
            self.notify("workspace/didChangeConfiguration", {"settings": self.settings})

    # JSON-RPC plumbing -----------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        assert self.process.stdin is not None
        with self._lock:
            self.process.stdin.write(f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            self.process.stdin.flush()

    def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while True:
            length = 0
            while True:
                line = stream.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode().partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            message = json.loads(stream.read(length))
            if "id" in message and "method" in message:  # a request from the server
                self._send({"id": message["id"], "result": self._answer(message)})
            elif "id" in message:
                self._responses.setdefault(message["id"], queue.Queue()).put(message)
            elif message.get("method") == "textDocument/publishDiagnostics":
                with self._published:
                    params = message["params"]
                    self.diagnostics[params["uri"]] = params["diagnostics"]
                    self._published.notify_all()

    def _answer(self, request: dict[str, Any]) -> Any:
        if request["method"] == "workspace/configuration":
            items = request["params"]["items"]
            return [self.settings.get(item.get("section", ""), None) for item in items]
        return None

    def request(self, method: str, params: Any, timeout: float = 60) -> Any:
        self._next_id += 1
        number = self._next_id
        box = self._responses.setdefault(number, queue.Queue())
        self._send({"id": number, "method": method, "params": params})
        reply = box.get(timeout=timeout)
        assert "error" not in reply, reply["error"]
        return reply.get("result")

    def notify(self, method: str, params: Any) -> None:
        self._send({"method": method, "params": params})

    # What an editor does ---------------------------------------------------------------
    def open(self, path: Path, text: str | None = None, language: str = "yaml") -> str:
        """Open ``path`` (with ``text`` if given, else its contents); return its URI."""
        uri = path.resolve().as_uri()
        content = path.read_text(encoding="utf-8", errors="replace") if text is None else text
        if uri in self._versions:  # still open: an editor would send the new text
            self.change(uri, content)
            return uri
        self._versions[uri] = 1
        with self._published:
            self.diagnostics.pop(uri, None)
        self.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": language, "version": 1, "text": content}},
        )
        return uri

    def change(self, uri: str, text: str) -> None:
        """Replace the whole document, as after a keystroke."""
        self._versions[uri] += 1
        with self._published:
            self.diagnostics.pop(uri, None)
        self.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": self._versions[uri]},
                "contentChanges": [{"text": text}],
            },
        )

    def edit(self, uri: str, line: int, start: int, end: int, text: str) -> None:
        """Replace characters ``start:end`` of one 0-based line, as a keystroke does."""
        self._versions[uri] += 1
        with self._published:
            self.diagnostics.pop(uri, None)
        span = {
            "start": {"line": line, "character": start},
            "end": {"line": line, "character": end},
        }
        self.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": self._versions[uri]},
                "contentChanges": [{"range": span, "text": text}],
            },
        )

    def close(self, uri: str) -> None:
        del self._versions[uri]
        self.notify("textDocument/didClose", {"textDocument": {"uri": uri}})

    def wait_for_diagnostics(self, uri: str, timeout: float = 30) -> list[dict[str, Any]]:
        """The next diagnostics published for ``uri`` after it was opened or changed."""
        deadline = time.monotonic() + timeout
        with self._published:
            while uri not in self.diagnostics:
                left = deadline - time.monotonic()
                assert left > 0, f"no diagnostics published for {uri}"
                self._published.wait(left)
            return self.diagnostics[uri]

    def at(self, method: str, uri: str, line: int, character: int) -> Any:
        """A position request (completion, hover, definition) at 0-based line/character."""
        return self.request(
            method,
            {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}},
        )

    def shutdown(self) -> None:
        try:
            self.request("shutdown", None, timeout=20)
            self.notify("exit", None)
            self.process.wait(timeout=20)
        except Exception:
            self.process.kill()
            self.process.wait()
