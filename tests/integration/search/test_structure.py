"""Policy documents as structured documents: articles, chapters, versions, effective dates, sidecars,
and what retrieval and answers do with them (real files from ../shared where named, else small laws)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import shared

from rag.answer.assistant import Assistant
from rag.index.indexer import index_corpus
from rag.ingest.chunking import article_label, chunk_document, is_regulation
from rag.ingest.cleaning import paragraphs
from rag.ingest.loaders import load
from rag.ingest.metadata import (
    DocMeta,
    extract,
    group_key,
    group_versions,
    read_sidecar,
)
from rag.lang.numbers import parse_cn_int
from rag.models import Page
from rag.search.question import analyze
from rag.search.retrieval import Retriever
from rag.search.structure import wanted_versions
from rag.settings import load_settings


def _chunks(path: Path):
    d = load(path, path.name)
    return chunk_document(paragraphs(d.pages), path.name)


@pytest.mark.parametrize("text,label", [
    ("第二十九条 社会团体在申请登记时弄虚作假的，予以撤销。", "第二十九条"),
    ("第一百零三条　国家建立科技伦理委员会。", "第一百零三条"),
    ("**第五条** 科普工作应当坚持群众性。", "第五条"),
    ("第12条 本办法自发布之日起施行。", "第12条"),
    ("第七条【职责】 县级以上科协负责…", "第七条"),
    # must not fire: a cross-reference, a list of articles, prose, a chapter
    ("第三条的规定适用于下列情形。", ""),
    ("第三条、第四条所列的事项，由理事会决定。", ""),
    ("第三条款规定的期限届满。", ""),
    ("第一章 总则", ""),
    ("科协第一条措施已经落实。", ""),
])
def test_article_label(text, label):
    assert article_label(text) == label


def test_reports_are_not_regulations():
    report = [Page("青岛市科协\n第一，组建科技志愿服务队。\n第二条措施是开展科普活动。\n一、总体情况\n全年开展活动300场。")]
    assert not is_regulation(paragraphs(report))


def test_a_regulation_is_parsed_into_articles_with_chapters():
    path = shared("corpus-extra", "社会团体登记管理条例_2016.md")
    chunks = _chunks(path)
    numbers = [parse_cn_int(c.article[1:-1]) for c in chunks if c.article]
    distinct = list(dict.fromkeys(numbers))
    assert distinct == list(range(1, len(distinct) + 1)) and len(distinct) >= 35, distinct  # every article, in order
    text = path.read_text(encoding="utf-8")
    for c in chunks:
        if not c.article:
            continue
        # heading and body together: the chunk that opens the article holds its heading line's text
        if c.text.startswith(c.article):
            assert c.heading.endswith(c.article)
        assert c.article in c.heading
    art29 = [c for c in chunks if c.article == "第二十九条"]
    assert art29 and "第六章 罚则" in art29[0].heading
    art2 = [c for c in chunks if c.article == "第二条"]
    # the second 款 of 第二条 ("国家机关以外的组织…") keeps its article number
    assert any("国家机关以外的组织可以作为单位会员" in c.text for c in art2)
    # the issuance line is front matter, not a heading of every article
    assert all("国务院令" not in c.heading and "国务院令" not in c.title for c in chunks)
    assert "INFO END" not in " ".join(c.text for c in chunks) and "INFO END" in text


def test_long_articles_split_at_paragraphs_keep_their_number():
    items = "\n".join(f"（{n}）第{n}项内容，关于科普场馆建设、科普人才培养与科普经费保障的具体要求。" for n in "一二三四五六七八")
    law = f"# 测试条例\n\n## 第一章 总则\n\n第一条 目的。\n\n第二条 下列事项应当遵守：\n{items}\n\n第三条 本条例自2020年1月1日起施行。"
    chunks = chunk_document(paragraphs([Page(law)]), "测试条例.md", size=120, overlap=20)
    two = [c for c in chunks if c.article == "第二条"]
    assert len(two) >= 2  # split
    assert all(len(c.text) <= 160 for c in two)
    assert "（八）" in "".join(c.text for c in two) and all("第一章 总则 > 第二条" in c.heading for c in two)
    assert [c.article for c in chunks if c.article] == sorted((c.article for c in chunks if c.article),
                                                               key=lambda a: parse_cn_int(a[1:-1]))


def test_the_two_science_popularisation_laws_are_versions_with_2024_in_force():
    metas = {}
    for name in ("中华人民共和国科学技术普及法_2002.md", "中华人民共和国科学技术普及法_2024修订.md",
                 "中华人民共和国科学技术进步法_2021.md"):
        p = shared("corpus-extra", name)
        paras = paragraphs(load(p, name).pages)
        metas[name] = extract(paras, name, "中华人民共和国科学技术普及法" if "普及" in name else "中华人民共和国科学技术进步法",
                              is_regulation(paras))
    old, new = metas["中华人民共和国科学技术普及法_2002.md"], metas["中华人民共和国科学技术普及法_2024修订.md"]
    assert old.adopted == "2002-06-29" and new.revised == ["2024-12-25"]
    assert new.effective == "2024-12-25"  # 自公布之日起施行
    assert metas["中华人民共和国科学技术进步法_2021.md"].effective == "2022-01-01"
    assert old.issuer == new.issuer == "全国人民代表大会常务委员会"
    v = group_versions(metas)
    assert v["中华人民共和国科学技术普及法_2024修订.md"].in_force
    assert not v["中华人民共和国科学技术普及法_2002.md"].in_force
    assert v["中华人民共和国科学技术普及法_2002.md"].note() == "（2002年版，已被2024年修订版取代）"
    assert not v["中华人民共和国科学技术进步法_2021.md"].siblings  # a different law: no group


@pytest.mark.parametrize("a,b,same", [
    ("中华人民共和国科学技术普及法", "科学技术普及法（2024年修订）", True),
    ("青年人才托举工程项目管理办法（试行）", "青年人才托举工程项目管理办法", True),
    ("科学技术普及法", "科学技术进步法", False),
    ("宁波市科学技术普及条例", "广东省科学技术普及条例", False),
])
def test_version_group_keys(a, b, same):
    assert (group_key(a) == group_key(b)) is same


def test_metadata_from_a_notice_header():
    paras = paragraphs([Page("连云港市科协关于印发《科普示范社区管理办法》的通知\n连科协〔2018〕16号\n"
                             "2018年3月5日印发\n第一条 为规范管理。\n第二条 适用范围。\n第三条 本办法自2018年4月1日起施行。")])
    m = extract(paras, "科普示范社区管理办法.txt", "科普示范社区管理办法", is_regulation(paras))
    assert m.number == "连科协〔2018〕16号" and m.published == "2018-03-05" and m.effective == "2018-04-01"
    assert m.regulation


@pytest.mark.parametrize("closing, published", [
    ("2023年7月12日", "2023-07-12"),
    ("青岛市科学技术协会\n2023年7月12日", "2023-07-12"),
    ("青岛市科学技术协会 二〇二三年七月十二日", "2023-07-12"),
    # must not fire: a date inside a sentence is no signature
    ("活动定于2023年7月12日举行。", ""),
    ("联系人：张三，电话：12345678", ""),
])
def test_a_letter_is_dated_where_it_is_signed(closing, published):
    paras = paragraphs([Page(f"关于加快涵洞建设的函\n蚌山区政府：\n请你区尽快落实建设方案。\n此函。\n{closing}")])
    assert extract(paras, "函.txt", "关于加快涵洞建设的函", False).published == published


def test_a_broken_sidecar_is_a_reason_not_a_crash(tmp_path):
    doc = tmp_path / "a.md"
    doc.write_text("x", encoding="utf-8")
    (tmp_path / "a.md.meta.toml").write_text("title = [", encoding="utf-8")
    with pytest.raises(ValueError, match="a.md.meta.toml"):
        read_sidecar(doc)
    (tmp_path / "a.md.meta.toml").write_text('titel = "x"', encoding="utf-8")
    with pytest.raises(ValueError, match="未知字段"):
        read_sidecar(doc)


@pytest.mark.parametrize("question,wanted", [
    ("科普场馆对青少年实行什么政策", {"new"}),  # default: the version in force
    ("2002年的科普法对科普场馆有什么规定", {"old"}),
    ("按2024年修订的科普法，科普场馆有什么规定", {"new"}),
    ("2024年修订的科普法与2002年版相比有什么变化", None),  # a comparison wants both
])
def test_which_version_a_question_asks_for(question, wanted):
    from rag.ingest.metadata import Version
    from rag.search.structure import DocInfo

    docs = {
        "old": DocInfo(DocMeta(adopted="2002-06-29", version="2002年版"), Version("old", "g", "2002年版", False, "new", "", ("new", "old")),
                       frozenset({"科普法"}), frozenset({"2002"})),
        "new": DocInfo(DocMeta(revised=["2024-12-25"], version="2024年修订版"), Version("new", "g", "2024年修订版", True, "", "", ("new", "old")),
                       frozenset({"科普法"}), frozenset({"2024"})),
    }
    got = wanted_versions(analyze(question, documents=frozenset({"科普法"})), docs)
    assert got == wanted


# -- end to end on a small corpus of laws ---------------------------------------------------------

LAW_2002 = """# 测试市科学普及条例

2002年6月29日 测试市人民代表大会常务委员会第五次会议通过

## 第一章 总则

第一条 为了促进科学普及工作，制定本条例。

第二条 本条例所称科学普及，是指采用公众易于理解的方式普及科学知识的活动。

## 第二章 组织管理

第三条 市科学技术协会是科学普及工作的主要社会力量。

第四条 政府投资建设的科普场馆，应当对青少年实行优惠。

第五条 本条例自2002年10月1日起施行。
"""

LAW_2024 = """# 测试市科学普及条例

2002年6月29日 测试市人民代表大会常务委员会第五次会议通过
2024年5月20日 测试市人民代表大会常务委员会第十次会议修订

## 第一章 总则

第一条 为了全面促进科学普及工作，制定本条例。

第二条 本条例所称科学普及，是指以公众易于理解、接受、参与的方式普及科学知识的活动。

## 第二章 组织管理

第三条 市科学技术协会是科学普及工作的主要社会力量，牵头实施全民科学素质行动。

第四条 政府投资建设的科普场馆，应当对青少年实行免费或者优惠。

第五条 本条例自2024年7月1日起施行。
"""

OTHER = """# 测试市科普画廊管理办法

第一条 为加强科普画廊建设，制定本办法。

第二条 科普画廊是指设置在社区、学校等公共场所，定期更换展示内容的科普宣传设施。

第三条 科普画廊每月至少更换一次展示内容。

第十二条 科普画廊的维护经费由设置单位承担，每块每年不少于二千元。
"""


@pytest.fixture(scope="module")
def laws(tmp_path_factory, embedder):
    root = tmp_path_factory.mktemp("laws")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "测试市科学普及条例_2002.md").write_text(LAW_2002, encoding="utf-8")
    (corpus / "测试市科学普及条例_2024修订.md").write_text(LAW_2024, encoding="utf-8")
    (corpus / "测试市科普画廊管理办法.md").write_text(OTHER, encoding="utf-8")
    s = load_settings(env={}, corpus_dir=corpus, index_dir=root / "index")
    rep = index_corpus(s, embedder=embedder)
    assert not rep.failed and not rep.skipped
    r = Retriever(s, embedder)
    yield s, r, Assistant(s, r)
    r.close()


def test_retrieval_prefers_the_version_in_force_and_answers_say_when_older(laws):
    s, r, a = laws
    hits = r.search("政府投资建设的科普场馆对青少年实行什么政策", 3)
    assert hits[0].chunk.source == "测试市科学普及条例_2024修订.md" and hits[0].chunk.article == "第四条"
    assert hits[0].note == "" and hits[0].label == "《测试市科学普及条例》第四条"
    old = r.search("2002年的条例规定政府投资建设的科普场馆对青少年实行什么政策", 3)
    assert old[0].chunk.source == "测试市科学普及条例_2002.md"
    ans = a.ask("2002年版测试市科学普及条例规定科普场馆对青少年实行什么政策")
    assert not ans.refused and "优惠" in ans.answer
    assert "（2002年版，已被2024年修订版取代）" in ans.answer, ans.answer
    assert ans.citations[0].label == "《测试市科学普及条例》第四条"
    plain = r.search("政府投资建设的科普场馆对青少年实行什么政策", 3, documents=["2002"])
    assert {h.chunk.source for h in plain} == {"测试市科学普及条例_2002.md"}  # a document filter


def test_effective_date_filter_gives_the_version_in_force_that_day(laws):
    s, r, a = laws
    on_2010 = r.search("科普场馆对青少年", 5, effective_on="2010-01-01")
    assert on_2010 and {h.chunk.source for h in on_2010} <= {"测试市科学普及条例_2002.md", "测试市科普画廊管理办法.md"}
    on_2025 = r.search("科普场馆对青少年", 5, effective_on="2025-01-01")
    assert "测试市科学普及条例_2002.md" not in {h.chunk.source for h in on_2025}


def test_a_named_article_is_answered_from_that_article(laws):
    s, r, a = laws
    hits = r.search("科普画廊管理办法第十二条规定了什么", 3)
    assert hits[0].chunk.article == "第十二条" and hits[0].chunk.source == "测试市科普画廊管理办法.md"
    ans = a.ask("科普画廊管理办法第十二条规定了什么")
    assert not ans.refused and "二千元" in ans.answer
    assert "《测试市科普画廊管理办法》第十二条" in ans.answer


@pytest.mark.xfail(strict=True, reason="阅读模型的已知不足：把“定期更换展示内容”（第二条，定义）读得比“每月至少更换一次”（第三条）"
                   "更像“更换频率”的答案；此前的规则式回答答对。strict：模型改进后此测试通过，须去掉标记")
def test_which_article_questions_are_answered_with_the_number(laws):
    s, r, a = laws
    ans = a.ask("测试市科普画廊管理办法哪一条规定了画廊展示内容的更换频率？")
    assert not ans.refused and "第三条" in ans.answer, ans.answer


def test_definition_articles_are_found(laws):
    s, r, a = laws
    hits = r.search("什么是科普画廊", 3)
    assert hits[0].chunk.article == "第二条" and "科普画廊是指" in hits[0].chunk.text
    ans = a.ask("什么是科学普及")
    assert "是指" in ans.answer and "2002年版" not in ans.answer  # the definition in force


def test_what_changed_cites_both_versions(laws):
    s, r, a = laws
    ans = a.ask("修订后的测试市科学普及条例与2002年版相比，科普场馆对青少年的政策有什么变化？")
    assert not ans.refused
    assert {c.source for c in ans.citations} == {"测试市科学普及条例_2002.md", "测试市科学普及条例_2024修订.md"}, ans.answer
    assert "免费" in ans.answer and "已被2024年修订版取代" in ans.answer


def test_a_sidecar_corrects_metadata_and_reindexing_respects_it(laws, embedder, tmp_path):
    s, _, _ = laws
    corpus = tmp_path / "corpus"
    shutil.copytree(s.corpus_dir, corpus)
    s2 = load_settings(env={}, corpus_dir=corpus, index_dir=tmp_path / "index")
    index_corpus(s2, embedder=embedder)
    # staff say the 2024 text is superseded too (say, by a 2025 text not yet uploaded) and fix its title
    (corpus / "测试市科学普及条例_2024修订.md.meta.toml").write_text(
        'superseded = true\neffective = "2024-07-01"\nnumber = "测试公告〔2024〕3号"\n', encoding="utf-8")
    rep = index_corpus(s2, embedder=embedder)
    assert rep.changed == ["测试市科学普及条例_2024修订.md"] and not rep.skipped  # the sidecar is no document
    from rag.index.store import Manifest

    meta = Manifest.read(s2.index_dir).files["测试市科学普及条例_2024修订.md"].meta
    assert meta["number"] == "测试公告〔2024〕3号" and meta["superseded"] is True
    r2 = Retriever(s2, embedder)
    try:
        hits = r2.search("政府投资建设的科普场馆对青少年实行什么政策", 3)
        assert hits[0].chunk.source == "测试市科学普及条例_2002.md"  # now the one in force
    finally:
        r2.close()


def _chunk(source, article="", text="正文。"):
    from rag.models import Chunk

    return Chunk(id=f"{source}{article}{text}", source=source, title=source, heading=article, page=None, position=0,
                 text=text, article=article)


@pytest.mark.parametrize("question,expect_first", [
    ("第十二条规定了什么", 2),  # the named article moves up from rank 3
    ("画廊办法第十二条规定了什么", 3),  # ... of the named document, ahead of another document's 第十二条
    ("什么是科普画廊", 1),  # the definition article
    ("科普画廊怎么维护", 0),  # no article, no definition asked: the fused order stands
    ("第十二届科普节什么时候举办", 0),  # 第十二届 is not an article
])
def test_rerank_table(question, expect_first):
    from rag.search.structure import DocInfo, rerank

    chunks = [_chunk("a.md", "第一条", "科普画廊应当定期维护。"), _chunk("b.md", "第二条", "本办法所称科普画廊，是指公共场所的宣传栏。"),
              _chunk("a.md", "第十二条", "经费由单位承担。"), _chunk("b.md", "第十二条", "每年检查一次。")]
    docs = {"a.md": DocInfo(DocMeta(), None, frozenset({"科普条例"}), frozenset()),
            "b.md": DocInfo(DocMeta(), None, frozenset({"画廊办法"}), frozenset())}
    fused = [(0, 0.04), (1, 0.03), (2, 0.02), (3, 0.01)]
    q = analyze(question, documents=frozenset({"科普条例", "画廊办法"}))
    assert rerank(fused, chunks, q, docs)[0][0] == expect_first


def test_rerank_brings_each_named_document_up():
    from rag.search.structure import DocInfo, rerank

    chunks = [_chunk("a.md", "第一条", "经费由财政保障。"), _chunk("a.md", "第二条", "经费逐年增加。"),
              _chunk("a.md", "第三条", "经费专款专用。"), _chunk("b.md", "第九条", "画廊经费由设置单位承担。")]
    docs = {"a.md": DocInfo(DocMeta(), None, frozenset({"科普条例"}), frozenset()),
            "b.md": DocInfo(DocMeta(), None, frozenset({"画廊办法"}), frozenset())}
    fused = [(0, 0.04), (1, 0.03), (2, 0.02), (3, 0.01)]
    names = frozenset({"科普条例", "画廊办法"})
    both = analyze("科普条例和画廊办法分别怎么规定经费", documents=names)
    assert [i for i, _ in rerank(fused, chunks, both, docs)][:2] == [0, 3]
    one = analyze("科普条例怎么规定经费", documents=names)  # one document named: the order stands
    assert [i for i, _ in rerank(fused, chunks, one, docs)] == [0, 1, 2, 3]


@pytest.mark.parametrize("question,words", [
    ("社会团体登记管理条例规定的活动资金是多少", "规定的活动资金是多少"),
    ("《科普法》第七条规定了什么", "第七条规定了什么"),  # a short form the corpus's title answers to
    ("浙江省科学技术普及条例怎么规定", "浙江省科学技术普及条例怎么规定"),  # not a corpus document: unchanged
    ("社会团体登记管理条例", "社会团体登记管理条例"),  # nothing left but the name: unchanged
])
def test_content_query(question, words):
    from rag.search.structure import DocInfo, content_query

    docs = {"a.md": DocInfo(DocMeta(), None, frozenset({"社会团体登记管理条例"}), frozenset()),
            "b.md": DocInfo(DocMeta(), None, frozenset({"科学技术普及法", "科普法"}), frozenset())}
    names = frozenset({"社会团体登记管理条例", "科学技术普及法", "科普法"})
    assert content_query(analyze(question, documents=names), docs).strip() == words


def test_an_article_the_named_regulation_lacks_is_said_so(laws):
    s, r, a = laws
    ans = a.ask("测试市科普画廊管理办法第二十条规定了什么？")
    assert ans.refused and "《测试市科普画廊管理办法》共十二条，没有第二十条。" in ans.answer, ans.answer
    # the article exists: answered; no document named: no structural refusal
    assert not a.ask("测试市科普画廊管理办法第三条规定了什么？").refused
    assert "没有第" not in a.ask("第二十条规定了什么？").answer
    # the version asked for decides: the 2024 text has a 第五条 like the 2002 one
    assert not a.ask("2024年修订的测试市科学普及条例第五条规定了什么？").refused


@pytest.mark.parametrize("n,text", [(1, "一"), (10, "十"), (11, "十一"), (20, "二十"), (105, "一百零五"), (110, "一百一十"),
                                    (1001, "一千零一")])
def test_cn_numeral_round_trips(n, text):
    from rag.lang.numbers import cn_numeral

    assert cn_numeral(n) == text and parse_cn_int(text) == n


def test_the_reranker_keeps_structural_tiers():
    """The reader orders passages within their tier: the named article first, a superseded version last,
    whatever its relevance."""
    from rag.e5.reader import Reading
    from rag.models import Chunk, Hit
    from rag.search.rerank import rerank

    class Relevance:  # reads each passage as relevant as the number it starts with
        def read(self, question, passages):
            return [Reading(float(p.split()[0]), 0.5, (0, 1), 0.0) for p in passages]

    hits = [Hit(Chunk(f"c{i}", "a.md", "t", "", None, i, text), 1.0, rank=i + 1)
            for i, text in enumerate(["1 旧版", "9 别处", "2 点名的条", "5 同一文件"])]
    out = rerank(Relevance(), "q", hits, 4, 0.0, tiers=[4, 3, 0, 2])
    assert [h.chunk.id for h in out] == ["c2", "c3", "c1", "c0"] and [h.rank for h in out] == [1, 2, 3, 4]
    assert out[0].tier == 0 and out[0].reading.relevance == 2.0
    # must not fire without tiers: relevance alone
    assert [h.chunk.id for h in rerank(Relevance(), "q", hits, 2, 0.0)] == ["c1", "c3"]


def test_the_reader_reads_the_content_not_the_named_version(laws):
    from rag.search.question import analyze
    from rag.search.structure import reading_query

    s, r, a = laws
    snap = r.snapshot()
    read = lambda text: reading_query(analyze(text, documents=snap.documents), snap.docs)  # noqa: E731
    out = read("2002年版测试市科学普及条例规定科普场馆对青少年实行什么政策")
    assert "2002" not in out and "测试市科学普及条例" not in out and "科普场馆对青少年实行什么政策" in out
    assert "2024" not in read("测试市科学普及条例（2024修订）第四条规定了什么")
    # must not fire: a document with one version keeps its years; a question naming no document is unchanged
    assert "2020年" in read("测试市科普画廊管理办法规定2020年以前的画廊怎么办")
    assert read("2002年科普场馆对青少年实行什么政策") == "2002年科普场馆对青少年实行什么政策"
