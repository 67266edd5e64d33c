"""Question analysis: what kind of answer is asked for, and the constraints a passage must satisfy.

One place for every question rule; `tests/unit/search/test_question.py` has the table of cases, including those where
a rule must not fire.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from rag.lang.numbers import ARTICLE, articles_in
from rag.lang.places import question_places
from rag.lang.short_forms import short_spellings
from rag.lang.text import normalize
from rag.lang.units import ALTERNATION as MEASURE_WORDS
from rag.lang.years import STATED as STATED_YEAR

KINDS = ("number", "date", "definition", "list", "who", "where", "how", "yesno", "article", "fact")


@dataclass
class Question:
    text: str
    kind: str = "fact"  # one of KINDS
    term: str = ""  # the defined term for "什么是X"
    unit: str = ""  # the measure word after 多少/几 ("支", "家", "项")
    places: set[str] = field(default_factory=set)
    years: list[str] = field(default_factory=list)  # "2023", as written in the text
    documents: list[str] = field(default_factory=list)  # names in 《》, and the corpus's document names
    articles: list[int] = field(default_factory=list)  # 第X条 -> X
    orgs: list[str] = field(default_factory=list)  # "XX科协", "XX学会", "XX委员会" (reported; no feature uses it yet)
    change: bool = False  # asks what changed between versions ("修订后有什么变化", "与2002年版相比")


_DEF_PATTERNS = [
    # "条例是怎样定义科学技术普及的", "条例对科协是怎么定性的": the term defined, not the document
    re.compile(r"^.*?对(.+?)(?:是|作了|做了|有)?(?:怎样|如何|怎么|什么样的?)(?:定义|界定|定性)的?[？?。！!]*$"),
    re.compile(r"^.*?(?:怎样|如何|怎么)(?:定义|界定|定性)(.+?)的?[？?。！!]*$"),
    re.compile(r"^(?:请问)?(?:什么是|什么叫|何为|何谓|啥是|解释一下|解释)(.+?)[？?。！!]*$"),
    re.compile(r"^(.+?)(?:是什么意思|是什么|指什么|是指什么|的含义是什么|的含义|的意思|是啥|什么意思|的内容是什么|"
               r"指的是什么|的定义是什么|的定义)[？?。！!]*$"),
]
# 几 asks a number except in 几乎 (almost), 几近 and 哪几 (which ones); 多长时间/多久 ask a duration.
_COUNT = re.compile(rf"(?:多少|(?<!哪)几(?!乎|近))({MEASURE_WORDS})?")
_NUMBER_WORDS = re.compile(r"数量|数目|总数|规模|比例|百分之|几成|多长时间|多久|多长|多大|多高|多重|多远|占比|金额")
_DATE = re.compile(r"哪一年|哪年|何年|何时|什么时候|什么时间|哪一天|几月|几号|几点|日期|何日|起施行|开始施行|生效")
_ARTICLE_ASK = re.compile(r"哪一条|哪条|第几条|哪个条款|什么条款")
_LIST = re.compile(r"哪些|有什么|包括|包含|哪几|列举|都有|有哪|几类|几种|几个方面")
_WHO = re.compile(r"谁|哪位|什么人|哪个人|何人|哪些人|由.{0,6}(?:负责|主管|承担)|哪个部门|哪个单位|哪个机构|什么部门|什么机构")
_WHERE = re.compile(r"哪里|在哪|何处|什么地方|哪个地方|哪个城市|哪个省|哪个国家")
_HOW = re.compile(r"如何|怎样|怎么|什么方式|哪种方式|什么办法|为什么|为何|什么原因")
_YESNO = re.compile(r"(?:是否|能否|可否|可不可以|能不能|是不是|有没有|会不会|要不要)|[^什怎]么[？?]?$|吗[？?]?$")
_CHANGE = re.compile(r"变化|变动|改变|修改了|修订了(?:哪些|什么)|有何不同|有什么不同|哪些不同|区别|相比|对比|新旧|前后")
_DOC = re.compile(r"《([^》]{2,40})》")
_ORG = re.compile(r"[\u4e00-\u9fff]{2,10}?(?:科协|科学技术协会|学会|协会|委员会|研究会)")


def _kind(q: str) -> tuple[str, str, str]:
    for rx in _DEF_PATTERNS:
        m = rx.match(q)
        if m:
            # "条例所称的“科普组织”是指什么": the quoted term, or what follows 所称 / 里说的, not the document
            # (a quote inside the term, "“三型”组织", stays part of it)
            quoted = re.search(r"[“\"]([^”\"]{2,20})[”\"]\s*$", m.group(1))
            term = quoted.group(1) if quoted else re.split(r"所称的?|里说的|中说的|里所说的", m.group(1))[-1]
            term = re.sub(r"[“”\"'《》\s]", "", term)
            term = re.sub(r"(?:具体|到底|究竟|主要)$", "", term)
            term = re.sub(r"^(?:请问|说的|所说的|提到的)", "", term)
            if 1 < len(term) <= 20 and not ARTICLE.search(term):
                return "definition", term, ""
    if _ARTICLE_ASK.search(q):
        return "article", "", ""
    if _DATE.search(q):
        return "date", "", ""
    if re.search(r"多少钱|多少经费|多少资金", q):  # an amount of money is stated in 元
        return "number", "", "元"
    m = _COUNT.search(q)
    if m or _NUMBER_WORDS.search(q):
        return "number", "", (m.group(1) or "") if m else ""
    if _WHO.search(q):
        return "who", "", ""
    if _WHERE.search(q):
        return "where", "", ""
    if _LIST.search(q):
        return "list", "", ""
    if _HOW.search(q):
        return "how", "", ""
    if _YESNO.search(q):
        return "yesno", "", ""
    return "fact", "", ""


_DOC_NAME = re.compile(r"[\u4e00-\u9fff（）()]{2,40}?(?:法|条例|办法|规定|细则|纲要|章程|规划|方案|意见)(?:（试行）|\(试行\))?")
_NATIONAL = "中华人民共和国"


_ALIAS_NOTE = re.compile(r"[（(]以下简称[^）)]{1,16}[）)]")


def defines(term: str, text: str) -> bool:
    """The text defines the term: "本条例所称X，是指…", "X（以下简称Y），是指…", "X是…", "X：…"."""
    flat = _ALIAS_NOTE.sub("", normalize(text).replace("“", "").replace("”", "").replace("*", ""))
    t = normalize(term)
    return f"所称{t}" in flat or re.search(re.escape(t) + r"[^,，。]{0,3}?(?:[:：]|是指|是|指|即|就是|[,，]是)", flat) is not None


def with_short_forms(text: str) -> str:
    """The text followed by its short-form spellings, so a question's 科普法 matches a title's 科学技术普及法."""
    return " ".join([text, *short_spellings(text)])


def document_names(titles) -> frozenset[str]:
    """Names of the corpus's policy documents, from their titles ("宁波市科学技术普及条例 2018 …" ->
    宁波市科学技术普及条例), also without the 中华人民共和国 that questions leave out. Reports have none."""
    names = set()
    for t in titles:
        m = _DOC_NAME.match(normalize(t).replace(" ", ""))
        if m and len(m.group(0)) >= 5:
            name = m.group(0)
            name = name[len(_NATIONAL):] if name.startswith(_NATIONAL) else name
            names.add(name)
            names.update(short_spellings(name)[:1])  # the first (longest) long form it has
    return frozenset(names)


def analyze(question: str, gazetteer: frozenset[str] = frozenset(),
            is_place: Callable[[str], bool] | None = None, documents: frozenset[str] = frozenset()) -> Question:
    """Type and constraints of a (standalone) question. `documents`: the corpus's document names, found in
    the question also without 《》."""
    q = normalize(question).strip()
    kind, term, unit = _kind(q)
    articles = articles_in(q)
    years = list(dict.fromkeys(STATED_YEAR.findall(q)))
    named = [d for d in sorted(documents, key=len, reverse=True) if d in q]
    named = [d for d in named if not any(d != o and d in o for o in named)]  # the longest name only
    docs = list(dict.fromkeys([d.strip() for d in _DOC.findall(q)] + named))
    orgs = list(dict.fromkeys(_ORG.findall(q)))
    places = question_places(q, gazetteer, is_place)
    return Question(q, kind, term, unit, places, years, docs, articles, orgs, bool(_CHANGE.search(q)))
