"""The local GGUF backend: the real llama.cpp engine (llama-cpp-python) through LangChain's ChatLlamaCpp.

No Chinese instruction model can be had offline, so the GGUF is written here (tests/tiny_gguf.py): a
one-layer llama that answers any prompt with a fixed script. What is tested is everything around the
model: loading the file named in the settings once, the chat template, the passages reaching the
model's context, streaming, citation verification of what it wrote, and clear fallbacks.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from rag.answer import Assistant
from rag.llm import SYSTEM_PROMPT
from rag.verify import SUPPORTED, support
from conftest import PROJECT_ROOT

QUESTION = "什么是四服务一加强"
UNSUPPORTED = "这句话在任何资料中都找不到依据"


@pytest.fixture(scope="module")
def scripted(corpus_index, retriever, tmp_path_factory):
    """A GGUF whose script quotes a retrieved sentence under a wrong [n], then adds an unsupported sentence."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python 未安装（可选依赖：pip install -e '.[local-llm]'）")
    pytest.importorskip("gguf")
    from tiny_gguf import pieces, write_script_model

    hits = retriever.search(QUESTION, max(corpus_index.top_k, 5))
    texts = [h.chunk.text for h in hits]
    choice = None
    for j, text in enumerate(texts):
        for sentence in re.split(r"[。！？\n]", text):
            sentence = sentence.strip().replace("**", "")
            wrong = [n for n, t in enumerate(texts, 1) if support(sentence, t) < SUPPORTED]
            if 15 <= len(sentence) <= 60 and "[" not in sentence and wrong:
                choice = (sentence, wrong[0])
                break
        if choice:
            break
    assert choice, "no retrieved sentence that some other passage does not support"
    sentence, wrong_n = choice
    script = [*pieces(sentence), f"[{wrong_n}]。", *pieces(UNSUPPORTED), f"[{1 if wrong_n != 1 else 2}]。"]
    path = write_script_model(tmp_path_factory.mktemp("gguf") / "script.gguf", script)
    settings = corpus_index.replace(answer_backend="llamacpp", gguf_path=str(path), gguf_context=16384)
    return settings, sentence, wrong_n, texts


@pytest.fixture(scope="module")
def local_assistant(scripted, retriever):
    return Assistant(scripted[0], retriever)


def test_streams_and_verifies_citations(scripted, local_assistant):
    settings, sentence, wrong_n, texts = scripted
    partial = []
    for step in local_assistant.ask_stream(QUESTION):
        partial.append(step.answer)
    final = step
    assert final.backend == "llamacpp" and not final.notice and not final.refused
    # Streamed piece by piece: the partial answers grow towards the raw script.
    partial = partial[:-1]
    assert len(partial) >= 3 and partial[0] and all(b.startswith(a) for a, b in zip(partial, partial[1:]))
    assert partial[-1] == f"{sentence}[{wrong_n}]。{UNSUPPORTED}[{1 if wrong_n != 1 else 2}]。"

    # The quoted sentence keeps a citation, re-pointed to a passage that holds it; the other loses its marker.
    m = re.search(re.escape(sentence) + r"((?:\[\d+\])+)。", final.answer)
    assert m, final.answer
    numbers = [int(n) for n in re.findall(r"\d+", m.group(1))]
    for n in numbers:
        assert support(sentence, final.citations[n - 1].text) >= SUPPORTED
    assert texts[wrong_n - 1] not in [final.citations[n - 1].text for n in numbers]
    assert re.search(re.escape(UNSUPPORTED) + r"。", final.answer)
    for n in re.findall(r"\[(\d+)\]", final.answer):
        assert 1 <= int(n) <= len(final.citations)
    assert {"retrieve", "generate", "verify"} <= set(final.timings)


def test_passages_reach_the_model_context(scripted, local_assistant):
    settings = scripted[0]
    a = local_assistant.ask(QUESTION)
    model, _ = local_assistant.llms.get(settings, "llamacpp")
    llama = model.client
    # What the engine actually evaluated: the templated prompt followed by the generated tokens.
    seen = llama.detokenize(llama.input_ids[: llama.n_tokens].tolist(), special=True).decode("utf-8", "replace")
    assert seen.startswith("<|im_start|>system\n" + SYSTEM_PROMPT)
    assert "<|im_start|>user\n<资料>" in seen and f"问题：{QUESTION}" in seen and "<|im_start|>assistant\n" in seen
    for n, h in enumerate(a.retrieved, 1):
        assert f"[{n}] 来源：{h.chunk.source}" in seen
        assert h.chunk.text.replace("<", "＜").replace(">", "＞") in seen


def test_model_loaded_once(scripted, local_assistant):
    settings = scripted[0]
    first = local_assistant.llms.get(settings, "llamacpp")[0]
    local_assistant.ask("青岛市科协组建了多少支科技志愿服务队")
    assert local_assistant.llms.get(settings, "llamacpp")[0] is first


def test_prompt_longer_than_context_falls_back(scripted, retriever):
    settings = scripted[0].replace(gguf_context=512)  # the byte-level test vocabulary needs ~7,000 tokens
    a = Assistant(settings, retriever).ask(QUESTION)
    assert a.backend == "extractive" and "上下文" in a.notice and "gguf_context" in a.notice
    assert "加强自身建设" in a.answer


def test_missing_model_file_falls_back_with_reason(corpus_index, retriever, tmp_path):
    s = corpus_index.replace(answer_backend="llamacpp", gguf_path=str(tmp_path / "missing.gguf"))
    a = Assistant(s, retriever).ask(QUESTION)
    assert a.backend == "extractive" and "GGUF 模型文件不存在" in a.notice and "missing.gguf" in a.notice
    assert "加强自身建设" in a.answer


def test_broken_model_file_falls_back_with_reason(corpus_index, retriever, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python 未安装")
    junk = tmp_path / "broken.gguf"
    junk.write_bytes(b"GGUF" + bytes(range(256)) * 16)  # the magic, then no valid header
    a = Assistant(corpus_index.replace(answer_backend="llamacpp", gguf_path=str(junk)), retriever).ask(QUESTION)
    assert a.backend == "extractive" and "无法加载 GGUF 模型 broken.gguf" in a.notice and not a.refused


def test_cli_ask_with_local_model(scripted):
    settings, sentence, _, _ = scripted
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEXIE_")}
    env.update({"KEXIE_CORPUS_DIR": str(settings.corpus_dir), "KEXIE_INDEX_DIR": str(settings.index_dir),
                "KEXIE_GGUF_PATH": settings.gguf_path, "KEXIE_GGUF_CONTEXT": "16384"})
    out = subprocess.run([sys.executable, "-m", "rag.cli", "ask", QUESTION, "--backend", "llamacpp", "--json"],
                         cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert sentence in data["answer"] and not data["refused"]
    assert data["citations"] and {"n", "source", "page", "heading", "text"} <= set(data["citations"][0])


def test_endpoint_fields_do_not_reload_the_local_model(scripted, local_assistant):
    settings = scripted[0]
    first = local_assistant.llms.get(settings, "llamacpp")[0]
    # What the web form's OpenAI fields change must not throw the loaded GGUF away.
    other = settings.replace(llm_base_url="http://127.0.0.1:1/v1", llm_model="x", llm_api_key="sk-x")
    assert local_assistant.llms.get(other, "llamacpp")[0] is first


def test_busy_local_model_falls_back_after_waiting(scripted, local_assistant):
    settings = scripted[0].replace(llm_timeout=0.5)
    _, lock = local_assistant.llms.get(settings, "llamacpp")
    with lock:  # another question is generating
        a = local_assistant.ask(QUESTION, llm=settings)
    assert a.backend == "extractive" and "本地模型正忙" in a.notice and "加强自身建设" in a.answer
