"""Make a GGUF file that ctransformers 0.2.27 can load, and the tokenizer that goes with it.

ctransformers' llama.cpp predates byte-level BPE vocabularies and tied embeddings. For
such a file (SmolLM2 among them) the loadable copy adds ``tokenizer.ggml.scores`` and an
``output.weight`` tensor (a copy of ``token_embd.weight``), and rewrites tokens and
merges from GPT-2's byte-to-unicode alphabet to raw bytes. Tensors are copied unchanged.
Tokenizing is then done with the ``tokenizers`` package, from the file's original
vocabulary, because ctransformers' own BPE tokenizer splits words badly.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTROL_TOKEN_TYPE = 3


@dataclass(frozen=True)
class PreparedModel:
    """A file ctransformers can load, with what the backend needs to talk to it."""

    path: Path
    model_type: str
    context_length: int
    tokenizer_json: Path | None
    """A ``tokenizers`` JSON file, or None when ctransformers' own tokenizer will do."""
    chat_template: str | None
    eos_token_id: int | None
    name: str


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted: the alphabet back to raw bytes."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes, strict=True)}


def _to_raw_bytes(token: str) -> bytes:
    table = _byte_decoder()
    if all(char in table for char in token):
        return bytes(table[char] for char in token)
    return token.encode("utf-8")


def _field_value(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def prepare(source: Path, cache_dir: Path) -> PreparedModel:
    """The loadable copy of ``source``, made once and cached under ``cache_dir``.

    The cache key is the source's path, size and modification time; a copy is written to
    a temporary name and renamed, so two processes preparing at once both end up with a
    whole file.
    """
    from gguf import GGUFReader

    stat = source.stat()
    key = f"{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:v1"

    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    target = cache_dir / f"{source.stem}-{digest}.ctransformers.gguf"
    meta_file = target.with_suffix(".json")
    if target.exists() and meta_file.exists():
        return _read_meta(meta_file, target)

    cache_dir.mkdir(parents=True, exist_ok=True)
    reader = GGUFReader(source)
    architecture = str(_field_value(reader, "general.architecture") or "llama")
    tokenizer_model = _field_value(reader, "tokenizer.ggml.model")
    byte_level = tokenizer_model == "gpt2"
    tokenizer_file: Path | None = None
    if byte_level:
        tokenizer_file = target.with_suffix(".tokenizer.json")
        _write_atomic(tokenizer_file, _tokenizer_json(reader).encode())
    tensor_names = {tensor.name for tensor in reader.tensors}
    needs_copy = (
        byte_level
        or "tokenizer.ggml.scores" not in reader.fields
        or "output.weight" not in tensor_names
    )
    if needs_copy:
        _write_converted(reader, target, architecture)
    else:
        target = source
    meta = {
        "model_type": architecture,
        "context_length": int(_field_value(reader, f"{architecture}.context_length") or 2048),
        "tokenizer_json": str(tokenizer_file) if tokenizer_file else None,
        "chat_template": _field_value(reader, "tokenizer.chat_template"),
        "eos_token_id": _field_value(reader, "tokenizer.ggml.eos_token_id"),
        "name": str(_field_value(reader, "general.name") or source.stem),
    }
    _write_atomic(meta_file, json.dumps(meta).encode())
    return _read_meta(meta_file, target)


def _read_meta(meta_file: Path, target: Path) -> PreparedModel:
    meta = json.loads(meta_file.read_text())
    return PreparedModel(
        path=target,
        model_type=meta["model_type"],
        context_length=int(meta["context_length"]),
        tokenizer_json=Path(meta["tokenizer_json"]) if meta["tokenizer_json"] else None,
        chat_template=meta["chat_template"],
        eos_token_id=meta["eos_token_id"],
        name=meta["name"],
    )


def _write_atomic(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    os.replace(temporary, path)


def _tokenizer_json(reader: Any) -> str:
    """A byte-level BPE ``tokenizers`` definition from the file's vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokens: list[str] = list(_field_value(reader, "tokenizer.ggml.tokens"))
    merges: list[str] = list(_field_value(reader, "tokenizer.ggml.merges") or [])
    types: list[int] = list(_field_value(reader, "tokenizer.ggml.token_type") or [])
    vocab = {token: index for index, token in enumerate(tokens)}
    pairs = [(left, right) for left, _, right in (merge.partition(" ") for merge in merges)]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    special = [
        AddedToken(token, special=True, normalized=False)
        for token, kind in zip(tokens, types, strict=False)
        if kind == CONTROL_TOKEN_TYPE
    ]
    tokenizer.add_special_tokens(special)
    return str(tokenizer.to_str())


def _write_converted(reader: Any, target: Path, architecture: str) -> None:
    from gguf import GGUFValueType, GGUFWriter

    temporary = target.with_name(target.name + f".{os.getpid()}.part")
    writer = GGUFWriter(temporary, architecture)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = field.contents()
        kind = field.types[0]
        sub_type = field.types[1] if kind == GGUFValueType.ARRAY and len(field.types) > 1 else None
        if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
            value = [
                b" ".join(_to_raw_bytes(part) for part in item.split(" "))
                if key.endswith("merges")
                else _to_raw_bytes(item)
                for item in value
            ]
        writer.add_key_value(key, value, kind, sub_type=sub_type)
    if "tokenizer.ggml.scores" not in reader.fields:
        count = len(reader.fields["tokenizer.ggml.tokens"].data)
        writer.add_key_value(
            "tokenizer.ggml.scores", [0.0] * count, GGUFValueType.ARRAY, GGUFValueType.FLOAT32
        )
    names = {tensor.name for tensor in reader.tensors}
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    if "output.weight" not in names:
        embedding = next(tensor for tensor in reader.tensors if tensor.name == "token_embd.weight")
        writer.add_tensor("output.weight", embedding.data, raw_dtype=embedding.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(temporary, target)
