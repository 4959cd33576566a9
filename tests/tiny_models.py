"""Tiny GGUF files of today's architectures (Qwen2, Llama 3, Gemma 3), for the llama-cpp
backend's tests: random weights, SmolLM2's vocabulary, and each family's own chat
template. There is no internet here to download real ones; these check that llama.cpp
loads each architecture through flowengine and that its chat template is the one used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowengine.kernel.backends.ctransformers import embedded_model_path

QWEN_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] "
    "+ '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] "
    "== 'assistant' else 'user' %}{{ '<start_of_turn>' + role + '\\n' + message['content'] "
    "| trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<start_of_turn>model\\n' }}{% endif %}"
)
TEMPLATES = {"qwen2": QWEN_TEMPLATE, "llama": LLAMA3_TEMPLATE, "gemma3": GEMMA3_TEMPLATE}
"""Each family's turn markers, as its chat template writes them (simplified)."""

EMBED, LAYERS, HEADS, KV_HEADS, HEAD_DIM, FFN = 64, 2, 4, 2, 16, 128


def _tokenizer_fields(writer: object) -> int:
    """Copy SmolLM2's vocabulary (GPT-2 style byte-level BPE) into ``writer``; returns its
    size."""
    import gguf

    reader = gguf.GGUFReader(str(embedded_model_path()))
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer.") or name == "tokenizer.chat_template":
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(name, field.contents())  # type: ignore[attr-defined]
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(name, field.contents())  # type: ignore[attr-defined]
        else:
            writer.add_key_value(name, field.contents(), kind)  # type: ignore[attr-defined]
    return len(reader.fields["tokenizer.ggml.tokens"].data)


def write_tiny_model(path: Path, arch: str) -> Path:
    """A tiny ``arch`` model (``qwen2``, ``llama`` or ``gemma3``) with random weights."""
    import gguf

    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{arch}")
    writer.add_context_length(2048)
    writer.add_embedding_length(EMBED)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    if arch == "gemma3":
        writer.add_key_length(HEAD_DIM)
        writer.add_value_length(HEAD_DIM)
        writer.add_sliding_window(512)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocabulary = _tokenizer_fields(writer)
    writer.add_chat_template(TEMPLATES[arch])

    def tensor(name: str, *shape: int) -> None:
        # GGUF lists dimensions innermost first; numpy wants them outermost first.
        data = rng.normal(0, 0.02, size=tuple(reversed(shape))).astype(np.float32)
        if name.endswith("norm.weight"):
            data = np.ones_like(data)
        writer.add_tensor(name, data)

    tensor("token_embd.weight", EMBED, vocabulary)
    for layer in range(LAYERS):
        block = f"blk.{layer}"
        tensor(f"{block}.attn_norm.weight", EMBED)
        tensor(f"{block}.attn_q.weight", EMBED, HEADS * HEAD_DIM)
        tensor(f"{block}.attn_k.weight", EMBED, KV_HEADS * HEAD_DIM)
        tensor(f"{block}.attn_v.weight", EMBED, KV_HEADS * HEAD_DIM)
        tensor(f"{block}.attn_output.weight", HEADS * HEAD_DIM, EMBED)
        if arch == "qwen2":
            tensor(f"{block}.attn_q.bias", HEADS * HEAD_DIM)
            tensor(f"{block}.attn_k.bias", KV_HEADS * HEAD_DIM)
            tensor(f"{block}.attn_v.bias", KV_HEADS * HEAD_DIM)
        if arch == "gemma3":
            tensor(f"{block}.attn_q_norm.weight", HEAD_DIM)
            tensor(f"{block}.attn_k_norm.weight", HEAD_DIM)
            tensor(f"{block}.post_attention_norm.weight", EMBED)
            tensor(f"{block}.post_ffw_norm.weight", EMBED)
        tensor(f"{block}.ffn_norm.weight", EMBED)
        tensor(f"{block}.ffn_gate.weight", EMBED, FFN)
        tensor(f"{block}.ffn_up.weight", EMBED, FFN)
        tensor(f"{block}.ffn_down.weight", FFN, EMBED)
    tensor("output_norm.weight", EMBED)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
