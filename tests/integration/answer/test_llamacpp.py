"""The local GGUF backend: the real llama.cpp engine (llama-cpp-python) in a worker process.

No Chinese instruction model can be had offline, so the GGUF is written here (tests/tiny_gguf.py): a
one-layer llama that answers any prompt with a fixed script, quantised to Q4_K_M by llama.cpp's own
quantize API so the k-quant kernels real models use are the ones that run. What is tested is
everything around the model: loading the file named in the settings once, the chat template, the
passages reaching the model's context, streaming, citation verification of what it wrote, a crashing
worker, and clear fallbacks.
"""

import json
import os
import re
import subprocess
import sys
import threading

import pytest
from conftest import PROJECT_ROOT

from rag.answer.assistant import Assistant
from rag.answer.llm import SYSTEM_PROMPT
from rag.answer.verify import SUPPORTED, support

# Last in the run, after the background build `make test` starts (tests/conftest.py).
pytestmark = [pytest.mark.local_llm, pytest.mark.usefixtures("local_llm_built")]

QUESTION = "什么是四服务一加强"
UNSUPPORTED = "这句话在任何资料中都找不到依据"


@pytest.fixture(scope="module")
def scripted(corpus_index, retriever, tmp_path_factory):
    """A GGUF whose script quotes a retrieved sentence under a wrong [n], then adds an unsupported sentence."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python 未安装（可选依赖：pip install -e '.[local-llm]'）")
    pytest.importorskip("gguf")
    from tiny_gguf import pieces, script_model, tensor_types

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
    path = script_model(tmp_path_factory.mktemp("gguf"), "script", script)
    assert {"Q4_K", "Q6_K"} <= tensor_types(path)
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
    model, _ = local_assistant.llms.get(settings.llm_endpoint(), "llamacpp")
    # What the engine actually evaluated: the templated prompt followed by the generated tokens.
    seen = model.evaluated_text()
    assert seen.startswith("<|im_start|>system\n" + SYSTEM_PROMPT)
    assert "<|im_start|>user\n<资料>" in seen and f"问题：{QUESTION}" in seen and "<|im_start|>assistant\n" in seen
    for n, h in enumerate(a.retrieved, 1):
        assert f"[{n}] 来源：{h.chunk.source}" in seen
        assert h.chunk.text.replace("<", "＜").replace(">", "＞") in seen


def test_model_loaded_once(scripted, local_assistant):
    settings = scripted[0]
    first = local_assistant.llms.get(settings.llm_endpoint(), "llamacpp")[0]
    local_assistant.ask("青岛市科协组建了多少支科技志愿服务队")
    assert local_assistant.llms.get(settings.llm_endpoint(), "llamacpp")[0] is first


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
    first = local_assistant.llms.get(settings.llm_endpoint(), "llamacpp")[0]
    # What the web form's OpenAI fields change must not throw the loaded GGUF away.
    other = settings.llm_endpoint(base_url="http://127.0.0.1:1/v1", model="x", api_key="sk-x")
    assert local_assistant.llms.get(other, "llamacpp")[0] is first


def test_busy_local_model_falls_back_after_waiting(scripted, local_assistant):
    settings = scripted[0].replace(llm_timeout=0.5)
    _, lock = local_assistant.llms.get(settings.llm_endpoint(), "llamacpp")
    with lock:  # another question is generating
        a = local_assistant.ask(QUESTION, llm=settings.llm_endpoint())
    assert a.backend == "extractive" and "本地模型正忙" in a.notice and "加强自身建设" in a.answer


def test_portable_build():
    """The Makefile builds llama.cpp without AVX-512/AMX kernels (they crash on real Q4_K models here)."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python 未安装")
    info = llama_cpp.llama_print_system_info().decode()
    assert "AVX2 = 1" in info
    for flag in ("AVX512 = 1", "AVX512_VNNI = 1", "AMX_INT8 = 1", "AMX_BF16 = 1"):
        assert flag not in info, info


def test_worker_crash_is_a_message_and_the_next_question_restarts_it(scripted, retriever, monkeypatch):
    settings, sentence, _, _ = scripted
    a = Assistant(settings, retriever)
    first = a.ask(QUESTION)
    assert first.backend == "llamacpp" and sentence in first.answer
    monkeypatch.setenv("KEXIE_FAULT", "llm_decode")  # the worker gets SIGSEGV while decoding, as with bad kernels
    crashed = a.ask(QUESTION)
    monkeypatch.delenv("KEXIE_FAULT")
    assert crashed.backend == "extractive" and "异常退出" in crashed.notice and "SIGSEGV" in crashed.notice
    assert "加强自身建设" in crashed.answer  # the offline answer, in this process that is still alive
    again = a.ask(QUESTION)
    assert again.backend == "llamacpp" and sentence in again.answer and not again.notice
    a.llms.close()


def test_concurrent_first_questions_start_one_worker(scripted, retriever):
    from rag.answer.local_llm import LocalModel

    settings = scripted[0]
    a = Assistant(settings, retriever)
    before = LocalModel.starts
    answers, errors = [], []

    def ask():
        try:
            answers.append(a.ask(QUESTION, llm=settings.llm_endpoint(timeout=120)))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(300)
    assert not errors and len(answers) == 8
    assert LocalModel.starts - before == 1
    assert all(x.backend == "llamacpp" for x in answers)
    a.llms.close()


@pytest.mark.parametrize("script, check", [
    # Only a placeholder: nothing a user could read, so never shown as the answer.
    (["[编号]", "。"], lambda a: a.backend == "extractive" and "没有给出可用的回答" in a.notice and a.answer),
    # Empty output.
    ([], lambda a: a.backend == "extractive" and a.answer and not a.answer.isspace()),
])
def test_unusable_model_output_never_reaches_the_user(corpus_index, retriever, tmp_path, script, check):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python 未安装")
    from tiny_gguf import script_model

    path = script_model(tmp_path, "empty", script or ["\u200b"])
    settings = corpus_index.replace(answer_backend="llamacpp", gguf_path=str(path), gguf_context=16384)
    a = Assistant(settings, retriever)
    result = a.ask(QUESTION)
    assert check(result), (result.answer, result.notice)
    a.llms.close()


def test_placeholders_removed_and_invented_figures_dropped(scripted, retriever, tmp_path):
    from tiny_gguf import pieces, script_model

    settings, sentence, _, _ = scripted
    invented = "截至目前共有987654名会员"
    script = [*pieces(sentence), "[资料]", "[编号]。", *pieces(invented), "[1]。"]
    path = script_model(tmp_path, "placeholders", script)
    a = Assistant(settings.replace(gguf_path=str(path)), retriever)
    result = a.ask(QUESTION)
    assert result.backend == "llamacpp" and sentence in result.answer
    assert "[编号]" not in result.answer and "[资料]" not in result.answer
    assert "987654" not in result.answer and "资料中没有的数字" in result.notice
    a.llms.close()


def test_an_abandoned_reply_does_not_leak_into_the_next_answer(scripted, retriever):
    settings, sentence, _, _ = scripted
    a = Assistant(settings, retriever)
    stream = a.ask_stream(QUESTION)
    next(step for step in stream if step.answer)  # the user leaves after the first tokens
    stream.close()
    b = a.ask(QUESTION)
    assert b.backend == "llamacpp" and b.answer.count(sentence) == 1  # no leftover tokens in front of it
    a.llms.close()


def test_a_silent_worker_is_stopped_and_replaced(scripted, retriever, monkeypatch):
    import rag.answer.local_llm as local_llm

    settings, sentence, _, _ = scripted
    a = Assistant(settings.replace(llm_timeout=3), retriever)
    monkeypatch.setattr(local_llm, "FIRST_TOKEN_TIMEOUT", 3.0)
    monkeypatch.setenv("KEXIE_FAULT", "llm_hang")  # the worker stops answering, as a native hang would
    hung = a.ask(QUESTION)
    monkeypatch.delenv("KEXIE_FAULT")
    assert hung.backend == "extractive" and "没有输出" in hung.notice and "加强自身建设" in hung.answer
    again = a.ask(QUESTION)  # the lock was released and a new worker answers
    assert again.backend == "llamacpp" and sentence in again.answer
    a.llms.close()
