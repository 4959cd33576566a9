"""The llama.cpp backend: any GGUF model as shipped, many runs decoded in one batch.

One llama.cpp context holds the KV caches of many sequences (one sequence id each). The
kernel's batched executor (``kernel/batching.py``) puts the next token of every active
request, and prompt chunks of newly admitted ones, into one ``llama_decode`` call: a small
model's decode on a CPU is bound by reading its weights, and one pass reads them once for
all the sequences in it. Built on llama-cpp-python's low-level API (its ``Llama`` class
keeps one sequence per context).
"""

from __future__ import annotations

import ctypes
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowengine.kernel import defaults
from flowengine.kernel.backends.base import BackendError, Capability, Message, chatml
from flowengine.kernel.backends.registry import BackendPlugin, BackendSettings, Option
from flowengine.kernel.threads import ThreadPolicy

SEQUENCES = 2 * defaults.MAX_BATCH
"""Sequences (runs keeping their KV cache between steps) one context holds."""

_TEMPLATE_KEY = b"tokenizer.chat_template"
_quiet_log: Any = None


def _silence_llama_log(llama: Any) -> None:
    """llama.cpp writes its loading chatter to stderr; a run's output should not have it.
    The callback is kept alive for the life of the process (llama.cpp keeps calling it)."""
    global _quiet_log
    if _quiet_log is None:

        @llama.llama_log_callback
        def _quiet(level: int, text: bytes, data: Any) -> None:
            return None

        _quiet_log = _quiet
        llama.llama_log_set(_quiet_log, ctypes.c_void_p())


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise BackendError(
            "--backend llama-cpp needs llama-cpp-python; run `make server` (it compiles "
            "once, in about five minutes) or `pip install llama-cpp-python`"
        ) from None
    return llama_cpp


@dataclass(frozen=True)
class Feed:
    """Tokens of one sequence for one decode, the first at position ``start``; ``logits``
    is ``none``, ``last`` or ``all`` (the rows the caller wants back)."""

    sequence: int
    tokens: Sequence[int]
    start: int
    logits: str = "last"


class LlamaCppBackend:
    """A GGUF model through llama.cpp, with one context shared by many sequences."""

    name = "llama-cpp"
    capabilities = frozenset(
        {
            Capability.CONSTRAINED_DECODING,
            Capability.LABEL_LOGPROBS,
            Capability.KV_REUSE,
            Capability.BATCHING,
            Capability.CHAT_TEMPLATE,
        }
    )
    """BATCHING: the kernel serves it with its batched executor (``kernel/batching.py``)."""

    def __init__(
        self,
        model_path: Path | None = None,
        context_length: int = defaults.CONTEXT_LENGTH,
        threads: int | None = None,
        sequences: int = SEQUENCES,
        max_batch: int = defaults.MAX_BATCH,
        tick_tokens: int = defaults.TICK_TOKENS,
    ) -> None:
        if sequences < 1 or max_batch < 1 or tick_tokens < 1:
            raise BackendError("--sequences, --max-batch and --tick-tokens must be at least 1")
        llama = _import_llama()
        self._llama = llama
        if model_path is None:
            from flowengine.kernel.backends.ctransformers import embedded_model_path

            model_path = embedded_model_path()
        if not model_path.is_file():
            raise BackendError(
                f"{model_path}: no such model file; pass --model PATH to a GGUF file"
            )
        _silence_llama_log(llama)
        llama.llama_backend_init()
        self._model = llama.llama_model_load_from_file(
            str(model_path).encode(), llama.llama_model_default_params()
        )
        if not self._model:
            raise BackendError(
                f"{model_path}: llama.cpp cannot load this file as a model; pass a GGUF "
                "file of an architecture llama.cpp supports"
            )
        self.model_name = model_path.name
        self._vocab = llama.llama_model_get_vocab(self._model)
        self.vocabulary_size = int(llama.llama_vocab_n_tokens(self._vocab))
        self.context_length = min(context_length, int(llama.llama_model_n_ctx_train(self._model)))
        self.eos_token_id = int(llama.llama_vocab_eos(self._vocab))
        self.sequences = max(sequences, max_batch)
        self.max_batch = max_batch
        self.tick_tokens = max(tick_tokens, max_batch)
        self.threads = ThreadPolicy(threads)
        self._threads_set = 0
        self._template = self._chat_template()
        self._grammar_tokenizer: Any = None
        self._lock = threading.Lock()
        params = llama.llama_context_default_params()
        params.n_ctx = self.context_length * self.sequences
        params.n_batch = self.tick_tokens
        params.n_ubatch = self.tick_tokens
        params.n_seq_max = self.sequences
        # Each sequence gets a window of its own: one run cannot crowd out another.
        params.kv_unified = False
        params.n_threads = params.n_threads_batch = self.threads.threads()
        self._context = llama.llama_init_from_model(self._model, params)
        if not self._context:
            llama.llama_model_free(self._model)
            raise BackendError(
                f"{model_path}: llama.cpp could not make a context of {self.sequences} "
                f"sequences x {self.context_length} tokens; lower --sequences or --context"
            )
        self._memory = llama.llama_get_memory(self._context)
        self._batch = llama.llama_batch_init(self.tick_tokens, 0, 1)

    # -- text ------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        room = len(data) + 16
        buffer = (self._llama.llama_token * room)()
        count = self._llama.llama_tokenize(self._vocab, data, len(data), buffer, room, False, True)
        if count < 0:  # llama.cpp says how much room it needs
            room = -count
            buffer = (self._llama.llama_token * room)()
            count = self._llama.llama_tokenize(
                self._vocab, data, len(data), buffer, room, False, True
            )
        return list(buffer[:count])

    def decode(self, tokens: Sequence[int]) -> str:
        tokens = [t for t in tokens if not self._llama.llama_vocab_is_control(self._vocab, t)]
        if not tokens:
            return ""
        array = (self._llama.llama_token * len(tokens))(*tokens)
        room = 8 * len(tokens) + 64
        text = ctypes.create_string_buffer(room)
        count = self._llama.llama_detokenize(
            self._vocab, array, len(tokens), text, room, False, False
        )
        if count < 0:
            room = -count + 1
            text = ctypes.create_string_buffer(room)
            count = self._llama.llama_detokenize(
                self._vocab, array, len(tokens), text, room, False, False
            )
        return text.raw[: max(count, 0)].decode("utf-8", errors="replace")

    def is_end(self, token: int) -> bool:
        """Whether ``token`` ends a reply (end of turn, end of text)."""
        return bool(self._llama.llama_vocab_is_eog(self._vocab, token))

    def label_tokens(self, label: str) -> list[int]:
        # With a leading space, as the ctransformers backend scores them (see there).
        return self.encode(" " + label.strip())

    def _chat_template(self) -> Any:
        """The model's own chat template (GGUF ``tokenizer.chat_template``), or ChatML."""
        size = 1 << 16
        text = ctypes.create_string_buffer(size)
        length = self._llama.llama_model_meta_val_str(self._model, _TEMPLATE_KEY, text, size)
        if length <= 0:
            return None
        if length >= size:
            text = ctypes.create_string_buffer(length + 1)
            self._llama.llama_model_meta_val_str(self._model, _TEMPLATE_KEY, text, length + 1)
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        bos = self._llama.llama_vocab_bos(self._vocab)
        return Jinja2ChatFormatter(
            text.value.decode("utf-8", errors="replace"),
            eos_token=self._token_text(self.eos_token_id),
            bos_token=self._token_text(bos) if bos >= 0 else "",
        )

    def _token_text(self, token: int) -> str:
        buffer = ctypes.create_string_buffer(256)
        count = self._llama.llama_token_to_piece(self._vocab, token, buffer, 256, 0, True)
        return buffer.raw[: max(count, 0)].decode("utf-8", errors="replace")

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        if self._template is None:
            return chatml(messages)
        try:
            rendered = self._template(
                messages=[{"role": m.role, "content": m.content} for m in messages]
            )
        except Exception as exc:  # a template that needs what we do not pass
            raise BackendError(
                f"{self.model_name}: its chat template failed ({exc}); use a GGUF file with a "
                "standard chat template"
            ) from None
        return str(rendered.prompt)

    def grammar_tokenizer(self) -> Any:
        """The vocabulary for llguidance, read from the model's own (built once)."""
        with self._lock:
            if self._grammar_tokenizer is None:
                from llguidance.llamacpp import lltokenizer_from_vocab

                # It reads each token's attributes through a function llama-cpp-python
                # marks deprecated: a warning a token, 49,152 times for SmolLM2.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._grammar_tokenizer = lltokenizer_from_vocab(
                        self._vocab, eos_token=self.eos_token_id
                    )
        return self._grammar_tokenizer

    # -- the shared context (the batched executor's worker thread only) -----------------

    def forget(self, sequence: int, start: int = 0) -> None:
        """Drop what ``sequence`` holds from position ``start`` on."""
        self._llama.llama_memory_seq_rm(self._memory, sequence, start, -1)

    def decode_batch(self, feeds: Sequence[Feed]) -> list[np.ndarray]:
        """Evaluate every feed in one ``llama_decode``; for each, the logits rows it asked
        for (none, the last token's, or every token's), copied out."""
        threads = self.threads.threads()
        if threads != self._threads_set:
            self._llama.llama_set_n_threads(self._context, threads, threads)
            self._threads_set = threads
        batch = self._batch
        index = 0
        wanted: list[tuple[int, int]] = []
        for feed in feeds:
            first = index
            for offset, token in enumerate(feed.tokens):
                batch.token[index] = token
                batch.pos[index] = feed.start + offset
                batch.n_seq_id[index] = 1
                batch.seq_id[index][0] = feed.sequence
                last = offset == len(feed.tokens) - 1
                batch.logits[index] = feed.logits == "all" or (feed.logits == "last" and last)
                index += 1
            wanted.append((first, index))
        if index > self.tick_tokens:
            raise BackendError(f"a tick of {index} tokens exceeds {self.tick_tokens}")
        batch.n_tokens = index
        status = self._llama.llama_decode(self._context, batch)
        if status != 0:
            raise BackendError(f"llama_decode failed with status {status}")
        rows: list[np.ndarray] = []
        for feed, (first, end) in zip(feeds, wanted, strict=True):
            if feed.logits == "none" or first == end:
                rows.append(np.empty((0, self.vocabulary_size), dtype=np.float32))
                continue
            positions = range(first, end) if feed.logits == "all" else range(end - 1, end)
            rows.append(
                np.stack(
                    [
                        np.ctypeslib.as_array(
                            self._llama.llama_get_logits_ith(self._context, i),
                            shape=(self.vocabulary_size,),
                        ).copy()
                        for i in positions
                    ]
                )
            )
        return rows

    def close(self) -> None:
        if self._context:
            self._llama.llama_batch_free(self._batch)
            self._llama.llama_free(self._context)
            self._llama.llama_model_free(self._model)
            self._context = None


def _open(settings: BackendSettings) -> LlamaCppBackend:
    max_batch = settings.option("max_batch", defaults.MAX_BATCH)
    return LlamaCppBackend(
        settings.model_path,
        settings.context_length,
        settings.threads,
        sequences=max(settings.pool_size or 2 * max_batch, max_batch),
        max_batch=max_batch,
        tick_tokens=settings.option("tick_tokens", defaults.TICK_TOKENS),
    )


PLUGIN = BackendPlugin(
    name="llama-cpp",
    help="any GGUF model llama.cpp loads (Qwen2.5, Llama 3, Gemma 3, ...), concurrent runs "
    "decoded in one batch",
    capabilities=LlamaCppBackend.capabilities,
    open=_open,
    options=(
        Option(
            "--max-batch",
            f"requests decoded together in one pass (default: {defaults.MAX_BATCH}; 1 decodes "
            "one request at a time)",
            kind="count",
            metavar="N",
        ),
        Option(
            "--tick-tokens",
            "tokens one pass may evaluate, generated tokens first, then prompt chunks "
            f"(default: {defaults.TICK_TOKENS})",
            kind="count",
            metavar="N",
        ),
    ),
)
