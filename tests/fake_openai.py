"""A small fake OpenAI-compatible server, for the faults a real one will not produce on cue.

Each request takes the next fault from ``faults`` (then behaves): ``429`` (with
Retry-After), ``500``, ``garbage`` (bytes that are not JSON), ``truncate`` (a stream cut off
mid-reply), ``sleep`` (answers after ``sleep_s``). ``logprobs`` are given when asked unless
``logprobs`` is None; ``honour_choice`` answers a ``grammar``/``guided_choice`` request with
its first choice; ``refuse_schema`` rejects ``response_format`` with HTTP 400.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    reply: str = "fine"
    faults: list[str] = field(default_factory=list)
    logprobs: list[tuple[str, float]] | None = None
    honour_choice: bool = True
    refuse_schema: bool = False
    sleep_s: float = 3.0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self) -> str | None:
        with self.lock:
            return self.faults.pop(0) if self.faults else None


class _Handler(BaseHTTPRequestHandler):
    behaviour: Behaviour

    def log_message(self, *_: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:  # http.server names it so
        behaviour = self.behaviour
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        behaviour.bodies.append(body)
        behaviour.keys.add(self.headers.get("Authorization", ""))
        fault = behaviour.next_fault()
        if fault == "429":
            error = {"error": {"message": "slow down"}}
            return self._send(429, json.dumps(error).encode(), {"Retry-After": "1"})
        if fault == "500":
            return self._send(500, b'{"error": {"message": "boom"}}', {"Retry-After": "0"})
        if fault == "garbage":
            return self._send(200, b"\x00\xffnot json at all")
        if fault == "sleep":
            time.sleep(behaviour.sleep_s)
        if "response_format" in body and behaviour.refuse_schema:
            error = b'{"error": {"message": "response_format is not supported"}}'
            return self._send(400, error)
        text = behaviour.reply
        logprobs = None
        if body.get("logprobs") and behaviour.logprobs is not None:
            top = [{"token": t, "logprob": p} for t, p in behaviour.logprobs]
            logprobs = {"content": [{**top[0], "top_logprobs": top}]}
            text = top[0]["token"]
        elif "guided_choice" in body and behaviour.honour_choice:
            text = body["guided_choice"][0]
        usage = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
        if not body.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": text}}
            choice.update(finish_reason="stop", logprobs=logprobs)
            return self._send(200, json.dumps({"choices": [choice], "usage": usage}).encode())
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        pieces = [text[i : i + 3] for i in range(0, len(text), 3)] or [""]
        for number, piece in enumerate(pieces):
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            if fault == "truncate" and number == len(pieces) // 2:
                self.close_connection = True
                return
        last = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}
        self.wfile.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
        self.close_connection = True


class FakeServer:
    """The fake server on 127.0.0.1, in a thread; ``url`` is its /v1 base URL."""

    def __init__(self, behaviour: Behaviour, port: int = 0) -> None:
        handler = type("Handler", (_Handler,), {"behaviour": behaviour})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
