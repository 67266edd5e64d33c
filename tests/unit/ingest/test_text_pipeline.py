"""Cleaning, chunking and tokenisation on small inputs made here, plus the seeds' known breaks."""

import re

import pytest
from conftest import CORPUS

from rag.index.tokenizer import Tokenizer, quoted_terms
from rag.ingest.chunking import chunk_document, document_contexts
from rag.ingest.cleaning import paragraphs
from rag.lang.sentences import TERMINAL
from rag.lang.text import normalize
from rag.models import Page


def paras(text: str, pdf=False):
    return paragraphs([Page(text)], pdf=pdf)


def test_sentences_cut_by_page_breaks_are_rejoined():
    long = "市科协联合有关单位开展学术交流活动，组织专家深入企业开展服务，全面推进学会改革，促进学科发"
    ps = paras(long + "\n\n展。下一段开始了，这是新的一段内容。")
    assert len(ps) == 1 and "促进学科发展。" in ps[0].text
    ps = paras("全面推进学会改革，41家市级学会建立服务站。学会承接 142\n\n项政府转移职能。")
    assert len(ps) == 1 and "承接 142项" in ps[0].text


def test_titles_and_finished_sentences_are_not_joined():
    ps = paras("青岛市科协奋力谱写新时代发展新篇章\n\n思想政治引领，团结全市科技工作者\n\n政治性是科协组织的根本属性。\n\n第二段。")
    assert [p.text for p in ps][:2] == ["青岛市科协奋力谱写新时代发展新篇章", "思想政治引领，团结全市科技工作者"]
    assert len(ps) == 4


def test_duplicate_paragraphs_dropped_once():
    dup = "这是一个重复出现的较长段落，用于检验去重功能是否正常工作。"
    ps = paras(f"{dup}\n\n中间。\n\n{dup}\n\n年年有余\n\n年年有余")
    assert [p.text for p in ps].count(dup) == 1
    assert [p.text for p in ps].count("年年有余") == 2  # short slogans may legitimately repeat


def test_seed_breaks_rejoined_in_real_corpus():
    text = (CORPUS / "济宁市科协_强化使命担当服务创新发展综述.txt").read_text(encoding="utf-8")
    assert "培训企业\n\n815家" in text  # the raw seed has the break
    joined = "\n".join(p.text for p in paras(text))
    assert "培训企业815家" in joined


def test_normalize_full_half_width_and_spaces():
    assert normalize("ＡＢＣ　１２３，科 协") == "ABC 123,科协"


POLICY = """# 某市科学技术协会条例

## 第一章 总则

第一条 为了发挥科学技术协会的作用，制定本条例。

第二条 科学技术协会是科学技术工作者的群众组织。它是党和政府联系科学技术工作者的桥梁和纽带。

## 第二章 组织

第三条 市科协由全市学会组成。

一、加强组织建设

（一）完善制度。各级科协要健全制度体系，落实工作责任。
"""


def test_chunks_follow_headings_and_clauses_and_keep_metadata():
    chunks = chunk_document(paras(POLICY), "dir/某市条例.md", size=60, overlap=10)
    assert all(c.source == "dir/某市条例.md" for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    by_text = {c.text[:3]: c for c in chunks}
    assert "第一章 总则" in by_text["第一条"].heading and "第一条" in by_text["第一条"].heading
    assert "第二章 组织" in by_text["第三条"].heading
    assert all("第一章" not in c.heading for c in chunks if "第三条" in c.text)  # never across sections
    assert all(c.title in c.index_text or normalize(c.title) in c.index_text for c in chunks)
    assert len({c.id for c in chunks}) == len(chunks)


def test_chunk_size_respected_and_sentences_not_split():
    body = "".join(f"第{i}句话讲述科协的一项具体工作内容。" for i in range(60))
    chunks = chunk_document(paras("标题\n\n" + body), "a.txt", size=100, overlap=20)
    assert len(chunks) > 5
    for c in chunks:
        assert len(c.text) <= 100
        assert c.text.endswith("。")


def test_no_text_lost_in_real_corpus():
    for f in sorted(CORPUS.iterdir()):
        ps = paras(f.read_text(encoding="utf-8"))
        chunks = chunk_document(ps, f.name)
        # Headings live in each chunk's heading path / title rather than its body text.
        joined = "".join("".join((c.title + c.heading + c.text).split()) for c in chunks)
        for p in ps:
            body = "".join(p.text.lstrip("#").split())
            assert body in joined or all(
                s in joined for s in re.split(f"(?<=[{TERMINAL}])", body) if s
            ), (f.name, p.text[:40])


def test_document_context_names_the_city():
    text = (CORPUS / "青岛市科协_奋力谱写新时代发展新篇章.txt").read_text(encoding="utf-8")
    # Even with a meaningless file name, the chunk context carries the city from the content.
    title, context = document_contexts(paras(text), "000_194e08218dc45569.txt")
    assert "青岛" in title and "青岛" in context
    title, context = document_contexts(paras("市科协召开会议。"), "青岛市科协_年度报告.txt")
    assert "青岛" in title and "年度报告" in title
    assert "年度报告" not in context and "青岛" not in context  # the file name never reaches the vectors


def test_quoted_terms_become_whole_tokens():
    texts = ["履行“四服务一加强”工作职能，打造**“科创中国”**品牌，“科普大篷车”进校园。"]
    terms = quoted_terms(texts)
    assert {"四服务一加强", "科创中国", "科普大篷车"} <= set(terms)
    tok = Tokenizer(terms)
    toks = tok.tokens("什么是四服务一加强？")
    assert "四服务一加强" in toks
    assert "什么" not in toks and "？" not in toks  # question and stop words dropped


def test_question_places_known_unknown_and_deictic():
    from rag.lang.places import question_places

    gaz = frozenset({"青岛", "济宁", "连云港"})
    assert question_places("青岛市科协组建了多少支科技志愿服务队", gaz) == {"青岛"}
    assert question_places("烟台市科协2023年的预算", gaz) == {"烟台"}  # not in the corpus, still a place
    # "我省" "本市" "各市" refer to no particular place.
    for q in ("请问我省科协有多少会员", "请问本市有多少学会", "各市科协开展了什么活动"):
        assert question_places(q, gaz) == set(), q


@pytest.mark.parametrize("text, tokens", [
    ("青岛市科协", 5),  # one a Han character
    ("AI赋能 2023年", 5),  # a run of letters or digits is one
    ("hello, world!", 4),  # punctuation counts
    ("", 0), ("  \n", 0),  # must not count: whitespace alone
])
def test_estimate_tokens(text, tokens):
    from rag.lang.text import estimate_tokens

    assert estimate_tokens(text) == tokens
