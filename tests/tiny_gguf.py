"""Write a tiny llama-architecture GGUF whose output is a fixed script, for exercising llama.cpp offline.

No instruction-tuned Chinese GGUF can be had here, so the llamacpp backend is tested with a real
GGUF file run by the real llama.cpp engine, built on the spot: a one-layer llama whose attention and
feed-forward outputs are zero, so the next token depends only on the current one (a bigram table).
Every token outside the script leads to the script's first piece, each piece to the next, the last
to <|im_end|>: after any prompt the model writes the script and stops. Its vocabulary is the 256
byte tokens (any UTF-8 text tokenises, one token per byte), the space token, ChatML control
tokens and the script's pieces; the chat template is ChatML.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def pieces(text: str, size: int = 8) -> list[str]:
    """Text cut into tokens of `size` characters (llama-cpp-python detokenises at most 32 bytes per token)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def write_script_model(path: Path, script: list[str], n_embd: int = 256) -> Path:
    """A GGUF that answers every prompt with "".join(script); pieces must be distinct tokens of ≤ 32 bytes."""
    import gguf

    assert len(set(script)) == len(script), "script pieces must be distinct tokens"
    assert all(len(p.encode()) <= 32 for p in script), "llama-cpp-python cannot detokenise pieces over 32 bytes"
    assert len(script) + 1 < n_embd
    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    # "▁" is how the SentencePiece-style tokenizer writes a space; as a normal token it detokenises back to " ".
    tokens = specials + [f"<0x{b:02X}>" for b in range(256)] + ["▁"] + script
    types = ([gguf.TokenType.UNKNOWN] + [gguf.TokenType.CONTROL] * 4 + [gguf.TokenType.BYTE] * 256
             + [gguf.TokenType.NORMAL] + [gguf.TokenType.USER_DEFINED] * len(script))
    eos = specials.index("<|im_end|>")
    first = len(specials) + 257
    n_vocab = len(tokens)

    # State k+1 = "the current token is script piece k"; state 0 = any other token.
    embd = np.zeros((n_vocab, n_embd), dtype=np.float32)
    embd[:, 0] = 1.0
    for k in range(len(script)):
        embd[first + k] = 0.0
        embd[first + k, k + 1] = 1.0
    out = np.zeros((n_vocab, n_embd), dtype=np.float32)
    for k in range(len(script)):
        out[first + k, k] = 10.0  # after state k comes piece k
    out[eos, len(script)] = 10.0  # after the last piece, stop

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("kexie-test-script-model")
    w.add_context_length(32768)
    w.add_embedding_length(n_embd)
    w.add_block_count(1)
    w.add_feed_forward_length(n_embd)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_rope_dimension_count(n_embd // 2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(False)
    w.add_add_space_prefix(False)
    w.add_chat_template(CHATML)

    zeros = np.zeros((n_embd, n_embd), dtype=np.float32)
    ones = np.ones(n_embd, dtype=np.float32)
    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", ones)
    w.add_tensor("output.weight", out)
    for name in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
        w.add_tensor(f"blk.0.{name}.weight", zeros)  # zero outputs: the residual stream is the embedding
    w.add_tensor("blk.0.attn_norm.weight", ones)
    w.add_tensor("blk.0.ffn_norm.weight", ones)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def quantize(src: Path, dst: Path, ftype: str = "Q4_K_M") -> Path:
    """Quantise with llama.cpp's own quantize API, so tests run the k-quant kernels real models use
    (n_embd must be a multiple of 256, the k-quant block size)."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed ({rc})")
    return dst


def script_model(directory: Path, name: str, script: list[str]) -> Path:
    """A Q4_K_M script model in `directory`."""
    f32 = write_script_model(directory / f"{name}.f32.gguf", script)
    return quantize(f32, directory / f"{name}.gguf")


def tensor_types(path: Path) -> set[str]:
    import gguf

    return {t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}
