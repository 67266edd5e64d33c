"""Saved conversations, feedback and its export to the eval format, knowledge bases and grants, signed links."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import PROJECT_ROOT

from rag.models import Answer, Citation
from rag.serve import export, feedback
from rag.serve.db import Database
from rag.serve.history import History, NotFound
from rag.serve.kbs import DEFAULT_ID, KBError, Registry
from rag.serve.links import Signer
from rag.settings import load_settings

PASSAGE = "青岛市科协组建了126支科技志愿服务队，开展科普活动300余场。"


def answer(q="青岛市科协组建了多少支科技志愿服务队", text="青岛市科协组建了126支科技志愿服务队[1]。", refused=False) -> Answer:
    cites = [] if refused else [Citation(1, "青岛.txt", None, "青岛市科协", PASSAGE, [PASSAGE[:20]], [(0, 20)])]
    return Answer(q, text, refused, cites, [], generation="g7")


@pytest.fixture
def hist(tmp_path):
    return History(Database(tmp_path / "data"))


def test_conversation_round_trip_survives_a_new_connection(tmp_path):
    h = History(Database(tmp_path / "data"))
    cid = h.create("user:a", "青岛市科协组建了多少支科技志愿服务队，另外还想问一个很长很长的问题", ["默认知识库"])
    h.add_turn("user:a", cid, answer(), "默认知识库")
    h2 = History(Database(tmp_path / "data"))  # a restarted app
    [conv] = h2.list("user:a")
    assert conv.title.endswith("…") and len(conv.title) <= 31
    [t] = h2.turns("user:a", cid)
    assert t.answer.endswith("[1]。") and t.generation == "g7" and t.kb == "默认知识库"
    assert t.citations[0]["spans"] == [[0, 20]] and t.citations[0]["source"] == "青岛.txt"


def test_owners_never_see_each_others_conversations(hist):
    cid = hist.create("user:a", "问题")
    tid = hist.add_turn("user:a", cid, answer(), "kb")
    assert hist.list("user:b") == []
    for call in (lambda: hist.turns("user:b", cid), lambda: hist.rename("user:b", cid, "x"),
                 lambda: hist.delete("user:b", cid), lambda: hist.rate("user:b", tid, -1),
                 lambda: hist.add_turn("user:b", cid, answer(), "kb")):
        with pytest.raises(NotFound):
            call()
    assert hist.turns("user:a", cid)[0].id == tid


def test_rename_delete_and_rating_replaced(hist):
    cid = hist.create("o", "问题")
    tid = hist.add_turn("o", cid, answer(), "kb")
    hist.rate("o", tid, 1)
    hist.rate("o", tid, -1, "数字不对", "126支")
    [f] = hist.feedback()
    assert (f.rating, f.comment, f.correction) == (-1, "数字不对", "126支")
    hist.rename("o", cid, "新标题")
    assert hist.list("o")[0].title == "新标题"
    hist.delete("o", cid)
    assert hist.list("o") == [] and hist.feedback() == []  # feedback goes with its conversation


@pytest.mark.parametrize("correction, want", [
    ("126支", ["126支"]),
    ("共组建了126支科技志愿服务队。", ["126支"]),  # the figure, not the wording around it
    ("应该是市科协科普部", ["市科协科普部"]),  # short, no figure: the phrase without the lead-in
    ("正确答案：科技志愿服务总队", ["科技志愿服务总队"]),
    ("为民服务中心", ["为民服务中心"]),  # must not fire: 为 opening a name is not a lead-in
    ("共有二百支队伍，分布在各区", ["共有二百支队伍，分布在各区"]),
    ("青岛市科协在2019年组建了126支科技志愿服务队，覆盖全市十个区市，开展活动300余场", ["2019年", "126支", "300余场"]),
    ("依据《中华人民共和国科学技术普及法》第二十条的规定，科普场馆应当对青少年实行优惠", ["《中华人民共和国科学技术普及法》", "二十条"][:1]),
    ("", []),
    ("[1][2]", []),  # only markers: nothing to require
    ("市科协牵头组织各区市科协和有关学会共同开展科普活动，面向社区居民和中小学生", []),  # long, nothing to require
])
def test_must_include_from_a_correction(correction, want):
    assert feedback.must_include(correction) == want


def test_export_lines_run_through_the_eval_loader(hist, tmp_path):
    from rag.evaluate.dataset import load_dataset

    cid = hist.create("o", "q")
    up = hist.add_turn("o", cid, answer(), "kb")
    fixed = hist.add_turn("o", cid, answer(text="组建了100支[1]。"), "kb")
    bare = hist.add_turn("o", cid, answer(q="科协有几个部门"), "kb")
    hist.rate("o", up, 1)
    hist.rate("o", fixed, -1, "", "126支")
    hist.rate("o", bare, -1, "不对")
    out = tmp_path / "fb.jsonl"
    assert feedback.export(hist.feedback(), out) == (3, 1)
    rows = {r["id"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    good = rows[f"fb-{up[:12]}"]
    assert good["answer"] == "青岛市科协组建了126支科技志愿服务队。" and good["evidence"] == [PASSAGE[:20]]
    corrected = rows[f"fb-{fixed[:12]}"]
    assert corrected["answer"] == "126支" and corrected["must_include"] == ["126支"]
    assert corrected["evidence"] == [PASSAGE[:20]]  # the cited passage contains the correction
    review = rows[f"fb-{bare[:12]}"]
    assert review["review"] is True and review["answer"] == "" and review["original_answer"]
    items = load_dataset(out)
    assert len(items) == 3


def curated(text: str = "青岛市科协组建了126支科技志愿服务队[1]。", shown: bool = True) -> Answer:
    """An answer with a curated one first, as the assistant gives it (Assistant._with_faq)."""
    from rag.answer.assistant import Assistant
    from rag.models import FaqMatch, FaqPair

    a = answer(text=text)
    m = FaqMatch(FaqPair("q1", "青岛有多少支科技志愿服务队？", "共有126支队伍。", "问答.csv", 2), 0.95)
    out = Assistant._with_faq(a, m)
    assert bool(out.doc_answer) is shown
    return out


def test_feedback_reads_the_curated_and_the_document_answer_apart(tmp_path):
    """The gold of a 👍 on a curated answer: its document answer, or the curated one given alone; an old row,
    saved with the two joined, exports the same once the app has split it."""
    from rag.answer.wording import DOC_MARK, FAQ_MARK

    db = Database(tmp_path / "data")
    hist = History(db)
    cid = hist.create("o", "q")
    backed = hist.add_turn("o", cid, curated(), "kb")
    alone = hist.add_turn("o", cid, curated("新建的科技馆于2023年开馆[1]。", shown=False), "kb")
    hist.rate("o", backed, 1)
    hist.rate("o", alone, 1)
    [t1, t2] = hist.turns("o", cid)
    assert t1.answer.startswith(FAQ_MARK) and DOC_MARK in t1.answer and DOC_MARK not in t2.answer  # saved as shown
    out = tmp_path / "fb.jsonl"
    feedback.export(hist.feedback(), out)
    first = out.read_text(encoding="utf-8")
    rows = {r["id"]: r for r in map(json.loads, first.splitlines())}
    assert rows[f"fb-{backed[:12]}"]["answer"] == "青岛市科协组建了126支科技志愿服务队。"
    assert rows[f"fb-{alone[:12]}"]["answer"] == "共有126支队伍。"
    assert {f.turn: feedback.answer_of(f) for f in hist.feedback()} == {backed: "青岛市科协组建了126支科技志愿服务队。",
                                                                       alone: "共有126支队伍。"}
    with db.connect() as c:  # as rows were saved before: no document answer of their own
        c.execute("UPDATE turns SET citations = json_remove(citations, '$.document')")
    old = History(db).feedback()
    assert {f.turn: f.document for f in old} == {backed: "青岛市科协组建了126支科技志愿服务队[1]。", alone: ""}
    feedback.export(old, out)
    assert out.read_text(encoding="utf-8") == first


def test_a_correction_nothing_can_be_required_of_is_reviewed_not_scored(hist):
    cid = hist.create("o", "q")
    tid = hist.add_turn("o", cid, answer(), "kb")
    long = "市科协牵头组织各区市科协和有关学会共同开展科普活动，面向社区居民和中小学生"
    hist.rate("o", tid, -1, "", long)
    [f] = hist.feedback()
    item = feedback.to_item(f)
    assert item["review"] is True and item["must_include"] == [] and item["answer"] == ""
    assert item["correction"] == long and item["original_answer"]


def test_a_corrected_wrong_answer_scores_wrong_in_eval(hist, tmp_path):
    """👎 + correction on a wrong answer, exported and scored as `kexie eval` scores it: the same wrong
    answer is wrong, an answer with the corrected figure is right."""
    from rag.evaluate.dataset import load_dataset
    from rag.evaluate.runner import answer_metrics

    cid = hist.create("o", "q")
    wrong = answer(text="组建了100支[1]。")
    tid = hist.add_turn("o", cid, wrong, "kb")
    hist.rate("o", tid, -1, "数字不对", "应该是126支")
    out = tmp_path / "fb.jsonl"
    feedback.export(hist.feedback(), out)
    items = load_dataset(out)
    assert [i.must_include for i in items] == [["126支"]]
    assert answer_metrics(items, [wrong])[0]["answer_accuracy"] == 0.0
    assert answer_metrics(items, [answer()])[0]["answer_accuracy"] == 1.0


def test_a_correction_the_cited_passage_lacks_is_not_given_that_evidence(hist):
    cid = hist.create("o", "q")
    tid = hist.add_turn("o", cid, answer(), "kb")
    hist.rate("o", tid, -1, "", "共有二百支队伍，分布在各区")
    [f] = hist.feedback()
    item = feedback.to_item(f)
    assert item["evidence"] == [] and item["answer"] == "共有二百支队伍，分布在各区"


def test_feedback_is_counted_per_cited_passage(hist):
    """The chunk view's 反馈 column: every owner's 👍/👎 on answers that cited a passage, in one base and one
    document, each answer once; other bases, other documents and unrated answers do not count."""
    other = "济宁市科协组织开展了海智计划。"
    twice = Answer("q", "答[1][2]", False, [Citation(1, "青岛.txt", None, "", PASSAGE), Citation(2, "青岛.txt", None, "", PASSAGE)], [])
    rated = [("a", answer(), "默认知识库", -1), ("b", answer(), "默认知识库", -1), ("c", answer(), "默认知识库", 1),
             ("d", twice, "默认知识库", -1), ("e", answer(), "另一个库", -1),
             ("f", Answer("q", "答[1]", False, [Citation(1, "济宁.txt", None, "", other)], []), "默认知识库", -1)]
    for owner, a, kb, rating in rated:
        cid = hist.create(owner, "问题")
        hist.rate(owner, hist.add_turn(owner, cid, a, kb), rating)
    hist.add_turn("g", hist.create("g", "问题"), answer(), "默认知识库")  # asked, never rated
    counts = feedback.passage_counts(hist.feedback(None), "默认知识库", "青岛.txt")
    assert counts == {PASSAGE: (1, 3)}
    assert feedback.passage_counts(hist.feedback(None), "默认知识库", "济宁.txt") == {other: (0, 1)}
    assert [feedback.count_label(c) for c in [(1, 3), (0, 2), (0, 0)]] == ["赞 1 · 踩 3", "踩 2", ""]


def test_markdown_and_docx_export(hist, tmp_path):
    from docx import Document

    cid = hist.create("o", "青岛问题")
    hist.add_turn("o", cid, answer(), "默认知识库")
    conv, turns = hist.get("o", cid), hist.turns("o", cid)
    md = export.markdown(conv, turns)
    assert "## 问：青岛市科协组建了多少支科技志愿服务队" in md and "[1] 青岛.txt" in md and PASSAGE[:10] in md
    assert "知识库：默认知识库 · 回答于 20" in md and "索引版本" not in md and "g7" not in md
    path = export.docx(conv, turns, tmp_path / "c.docx")
    text = "\n".join(p.text for p in Document(path).paragraphs)
    assert "126支" in text and "[1] 青岛.txt" in text and "回答于" in text and "g7" not in text


def test_feedback_export_cli(tmp_path):
    h = History(Database(tmp_path / "data"))
    cid = h.create("o", "q")
    tid = h.add_turn("o", cid, answer(), "kb")
    h.rate("o", tid, -1, "", "126支")
    out = tmp_path / "out.jsonl"
    r = subprocess.run([sys.executable, "-m", "rag.cli", "feedback", "export", "--data", str(tmp_path / "data"), "--out", str(out),
                        "--only", "down"], cwd=PROJECT_ROOT, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert "已导出 1 条" in r.stdout and json.loads(out.read_text(encoding="utf-8"))["must_include"] == ["126支"]
    r = subprocess.run([sys.executable, "-m", "rag.cli", "feedback", "export", "--data", str(tmp_path / "none"), "--out", str(out)],
                       cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "没有会话与反馈" in r.stderr


# -- knowledge bases and grants -------------------------------------------------------------
def settings(tmp_path, **kw):
    return load_settings(env={}, corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index", data_dir=str(tmp_path / "data"), **kw)


@pytest.mark.parametrize("user, grants, visible", [
    (None, {}, {"默认知识库", "财务"}),  # login off: everything
    ("admin", {}, {"默认知识库", "财务"}),  # auth_user: everything
    ("alice", {"alice": ["默认知识库"]}, {"默认知识库"}),
    ("alice", {"alice": ["*"]}, {"默认知识库", "财务"}),
    ("bob", {}, {"财务"}),  # the creator
    ("carol", {}, set()),  # nothing granted
])
def test_grants(tmp_path, user, grants, visible):
    s = settings(tmp_path, auth_user="admin", auth_password="pw", users={"alice": "a", "bob": "b", "carol": "c"}, grants=grants)
    reg = Registry(s)
    with reg.db.connect() as c:  # a base created by bob (without indexing: no model needed here)
        c.execute("INSERT INTO kbs VALUES ('k2', '财务', 'bob', 1)")
    assert {b.name for b in reg.visible(user)} == visible
    if "财务" not in visible:
        with pytest.raises(KBError, match="不存在或无权访问|没有可用的知识库"):
            reg.get("k2", user)


def test_kb_names_are_checked(tmp_path):
    reg = Registry(settings(tmp_path))
    for bad in ("", "   ", "x" * 41, "a\x00b"):
        with pytest.raises(KBError):
            reg.create(bad)
    with pytest.raises(KBError, match="默认知识库不能删除"):
        reg.delete(DEFAULT_ID)
    assert reg.rename(DEFAULT_ID, "总库").name == "总库"
    with pytest.raises(KBError, match="同名"):
        reg.create("总库")


def test_signed_links(tmp_path):
    s = Signer(tmp_path)
    t = s.token("alice", "k2", "a/b.txt", now=1000)
    assert s.verify(t, "k2", "a/b.txt", now=1001) == "alice"
    assert s.verify(t, "k2", "a/c.txt", now=1001) is None  # another file
    assert s.verify(t, "default", "a/b.txt", now=1001) is None  # another base
    assert s.verify(t, "k2", "a/b.txt", now=1000 + 13 * 3600) is None  # expired
    body, mac = t.split(".")
    assert s.verify(body[:-2] + "xx." + mac, "k2", "a/b.txt", now=1001) is None  # altered
    assert s.verify("garbage", "k2", "a/b.txt") is None
    assert Signer(tmp_path).verify(t, "k2", "a/b.txt", now=1001) == "alice"  # the key survives a restart
    assert Signer(tmp_path / "other").verify(t, "k2", "a/b.txt", now=1001) is None


@pytest.mark.parametrize("user, kb_id, may", [
    (None, DEFAULT_ID, True),  # login off: one trusted office
    ("admin", "k2", True),
    ("bob", "k2", True),  # its creator
    ("alice", DEFAULT_ID, False),  # granted: may read and ask, not change
    ("alice", "k2", False),
])
def test_who_may_change_a_base(tmp_path, user, kb_id, may):
    s = settings(tmp_path, auth_user="admin", auth_password="pw", users={"alice": "a", "bob": "b"},
                 grants={"alice": "默认知识库"})  # a string in TOML: one name, never a substring match
    reg = Registry(s)
    with reg.db.connect() as c:
        c.execute("INSERT INTO kbs VALUES ('k2', '默认', 'bob', 1)")
    if user == "alice":
        assert {b.name for b in reg.visible("alice")} == {"默认知识库"}
        if kb_id == "k2":
            return
    if may:
        assert reg.managed(kb_id, user).id == kb_id
    else:
        with pytest.raises(KBError, match="只能查看"):
            reg.managed(kb_id, user)
        with pytest.raises(KBError):
            reg.rename(kb_id, "改名", user)


def test_grant_cli(tmp_path):
    s = settings(tmp_path, users={"alice": "a"})
    reg = Registry(s)
    with reg.db.connect() as c:
        c.execute("INSERT INTO kbs VALUES ('k2', '财务', 'bob', 1)")
    base = [sys.executable, "-m", "rag.cli", "grant", "--corpus", str(tmp_path / "corpus"), "--index", str(tmp_path / "index"),
            "--data", str(tmp_path / "data")]
    r = subprocess.run(base + ["alice", "财务"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "已授权：alice → 财务" in r.stdout, r.stderr
    assert "财务" in {b.name for b in reg.visible("alice")}
    r = subprocess.run(base + ["alice", "k2", "--revoke"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "财务" not in {b.name for b in reg.visible("alice")}
    r = subprocess.run(base + ["alice", "没有这个库"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "不存在" in r.stderr
