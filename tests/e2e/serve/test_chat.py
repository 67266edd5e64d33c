"""The chat use case under the page and the API (rag/serve/chat.py): several knowledge bases through /api/ask
and /v1/chat/completions, every base named checked for the caller; stand-in assistants, no model."""

from __future__ import annotations

import json

import pytest
from test_api import api_client

from rag.models import Answer, Citation
from rag.serve import chat
from rag.serve.kbs import DEFAULT_ID, KBError, Registry
from rag.settings import load_settings

# Each test builds the HTTP API over a registry (seconds), as test_api.py's slow tests do: not the unit tier.
pytestmark = pytest.mark.slow

KEY = {"Authorization": "Bearer k-123456"}
Q = "青岛市科协组建了多少支科技志愿服务队"


class Stand:
    """An assistant that gives one fixed answer, and counts the questions it was asked."""

    def __init__(self, text: str, evidence: float, refused: bool = False):
        self.text, self.evidence, self.refused, self.asked = text, evidence, refused, []

    def answer(self, question) -> Answer:
        cites = [] if self.refused else [Citation(1, "a.txt", None, "", self.text)]
        return Answer(question, self.text, self.refused, cites, [], evidence=self.evidence, generation="g1")

    def ask_stream(self, question, history=None, backend=None, k=None, mode=None, llm=None):
        self.asked.append(question)
        yield self.answer(question)

    def ask(self, question, history=None, backend=None, **kw):
        return list(self.ask_stream(question, history, backend, **kw))[-1]


def stand_in(registry: Registry) -> tuple[str, Stand, Stand]:
    """The default base refuses; a second base, 财务库, answers."""
    other = registry.create("财务库", None)
    refuses, answers = Stand("根据现有资料未找到与该问题相关的内容。", 0.1, refused=True), Stand("共有126支[1]。", 0.9)
    registry._assistants[DEFAULT_ID], registry._assistants[other.id] = refuses, answers
    return other.id, refuses, answers


@pytest.fixture
def api(tmp_path):
    client, registry = api_client(tmp_path, host="0.0.0.0", api_keys=("k-123456",))
    return (client, *stand_in(registry))


def test_ask_takes_several_bases_and_says_which_answered(api):
    client, other, refuses, answers = api
    r = client.post("/api/ask", headers=KEY, json={"question": Q, "kbs": [DEFAULT_ID, "财务库"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == "共有126支[1]。" and body["refused"] is False and body["kb"] == other
    assert refuses.asked == [Q] and answers.asked == [Q]  # both bases were asked
    # One base by `kb`: exactly the answer's JSON as before, no added key.
    r = client.post("/api/ask", headers=KEY, json={"question": Q, "kb": DEFAULT_ID})
    assert r.json() == refuses.answer(Q).to_json()


def test_a_base_that_cannot_be_read_refuses_the_whole_question(api):
    client, other, refuses, answers = api
    r = client.post("/api/ask", headers=KEY, json={"question": Q, "kbs": [other, "没有这个库"]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "kb_not_found"
    msgs = [{"role": "user", "content": Q}]
    r = client.post("/v1/chat/completions", headers=KEY, json={"model": f"{other},nope", "messages": msgs})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert refuses.asked == [] and answers.asked == []  # nothing was answered from the readable one


def test_chat_completions_over_several_bases(api):
    client, other, refuses, answers = api
    msgs = [{"role": "user", "content": Q}]
    r = client.post("/v1/chat/completions", headers=KEY, json={"model": f"kexie,{other}", "messages": msgs})
    body = r.json()
    assert r.status_code == 200 and body["model"] == f"{DEFAULT_ID},{other}" and body["kb"] == other
    assert body["choices"][0]["message"]["content"] == "共有126支[1]。" and body["citations"][0]["n"] == 1
    with client.stream("POST", "/v1/chat/completions", headers=KEY,
                       json={"model": f"{DEFAULT_ID},财务库", "messages": msgs, "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert text == "共有126支[1]。" and events[-1]["answer"] == text and events[-1]["kb"] == other
    # One base as before: the model is its id.
    r = client.post("/v1/chat/completions", headers=KEY, json={"model": "财务库", "messages": msgs})
    assert r.json()["model"] == other and r.json()["kb"] == other


def test_every_base_named_is_checked_for_the_user(tmp_path):
    """The page's rule through the use case: a base not granted to this user stops the question before any
    base answers it, whatever else is named with it."""
    s = load_settings(env={}, corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index", data_dir=str(tmp_path / "data"),
                      auth_user="admin", auth_password="pw", users={"bob": "b"}, grants={"bob": ["默认知识库"]})
    registry = Registry(s)
    other, refuses, answers = stand_in(registry)
    with pytest.raises(KBError, match="不存在或无权访问"):
        chat.ask(registry, "bob", [DEFAULT_ID, other], Q, [])
    assert refuses.asked == [] and answers.asked == []
    reply = chat.ask(registry, "bob", [], Q, [])  # none named: the first base bob may read
    assert reply.base.id == DEFAULT_ID and reply.answer.refused and reply.fused is None
    reply = chat.ask(registry, "admin", [DEFAULT_ID, other, other], Q, [])
    assert reply.base.id == other and [b.id for b in reply.bases] == [DEFAULT_ID, other] and reply.fused is not None
