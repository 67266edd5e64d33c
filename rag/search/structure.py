"""What a policy document's structure adds to a ranking: the article a question names, the definition
article of the term it asks about, the version of a regulation in force, and filters by document and by
effective date. Every rule is applied to the fused ranking in one place (`rerank`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag.ingest.metadata import DocMeta, Version, group_versions
from rag.lang.numbers import cn_numeral, parse_cn_int
from rag.lang.text import normalize
from rag.lang.years import YEAR
from rag.models import Chunk, Hit
from rag.search.question import Question, defines, document_names

# A superseded version that the question did not ask for keeps this share of its fused score: still found
# when only it holds the answer (a provision the revision dropped), never ahead of the text in force.
OLD_VERSION = 0.5
# Only the fused top of the list is re-ordered: a structural match deep in the ranking is not evidence.
WINDOW = 50


@dataclass
class DocInfo:
    """Per source: its metadata, its place among versions, the names a question may call it by."""

    meta: DocMeta
    version: Version | None
    names: frozenset[str]
    years: frozenset[str]  # the years that identify this version ("2002年的科普法")
    articles: frozenset[int] = frozenset()  # the article numbers it has (regulations)


def documents(metas: dict[str, DocMeta], chunks: list[Chunk]) -> dict[str, DocInfo]:
    """DocInfo for every indexed source, from its metadata and its chunks' titles."""
    versions = group_versions(metas)
    titles: dict[str, str] = {}
    numbers: dict[str, set[int]] = {}
    for c in chunks:
        titles.setdefault(c.source, c.title)
        if c.article:
            numbers.setdefault(c.source, set()).add(_number(c.article))
    out = {}
    for s, m in metas.items():
        own = {d[:4] for d in (m.latest(), m.effective) if d}
        own |= set(re.findall(YEAR, m.version))
        out[s] = DocInfo(m, versions.get(s), document_names([titles.get(s, ""), m.title]), frozenset(own),
                         frozenset(numbers.get(s, ())))
    return out


def named_sources(q: Question, docs: dict[str, DocInfo]) -> set[str]:
    """The corpus sources the question names (by full name, without 中华人民共和国, or by short form)."""
    if not q.documents:
        return set()
    return {s for s, info in docs.items()
            if any(d in info.names or any(d in n or n in d for n in info.names) for d in q.documents)}


def _number(article: str) -> int:
    """第二十九条 -> 29."""
    return parse_cn_int(article[1:-1]) or 0


def wanted_versions(q: Question, docs: dict[str, DocInfo]) -> set[str] | None:
    """Sources the question asks for among versions of one text; None when every version is wanted
    (it asks what changed)."""
    if q.change:
        return None
    out = set()
    grouped = {s: i for s, i in docs.items() if i.version and i.version.siblings}
    groups: dict[str, list[str]] = {}
    for s, i in grouped.items():
        groups.setdefault(i.version.group, []).append(s)
    for members in groups.values():
        named = [s for s in members if q.years and set(q.years) & docs[s].years]
        out |= set(named) if named else {s for s in members if docs[s].version.in_force}
    return out


# Structural tiers of a passage for a question (lower first): what the question names (its article, the
# definition of its term) in the document it names, the same elsewhere, the named documents, the rest, and
# last a superseded version the question did not ask for.
NAMED, NAMED_ELSEWHERE, IN_NAMED_DOC, OTHER, SUPERSEDED = range(5)


@dataclass
class Tiers:
    """Each passage's structural tier for one question (see the constants above)."""

    q: Question
    docs: dict[str, DocInfo]

    def __post_init__(self):
        self.named_docs = named_sources(self.q, self.docs)
        self.want = wanted_versions(self.q, self.docs)

    def superseded(self, c: Chunk) -> bool:
        info = self.docs.get(c.source)
        return bool(self.want is not None and info and info.version and info.version.siblings and c.source not in self.want)

    def of(self, c: Chunk, versions: bool = True) -> int:
        """The tier; `versions=False` leaves superseded versions where their content puts them."""
        if versions and self.superseded(c):
            return SUPERSEDED
        q, in_named = self.q, not self.named_docs or c.source in self.named_docs
        if (q.articles and c.article and _number(c.article) in q.articles) or (
                q.kind == "definition" and q.term and defines(q.term, c.text)):
            return NAMED if in_named else NAMED_ELSEWHERE
        return IN_NAMED_DOC if in_named else OTHER


def rerank(fused: list[tuple[int, float]], chunks: list[Chunk], q: Question, docs: dict[str, DocInfo]) -> list[tuple[int, float]]:
    """The fused ranking with structure applied: the named article of the named document, then definition
    articles of the asked term, first (in their fused order); superseded versions not asked for scaled down."""
    if not docs:
        return fused
    tiers_of = Tiers(q, docs)
    scored = [(i, score * OLD_VERSION if tiers_of.superseded(chunks[i]) else score) for i, score in fused]
    scored.sort(key=lambda x: -x[1])
    head, tail = scored[:WINDOW], scored[WINDOW:]
    tiers = [tiers_of.of(chunks[i], versions=False) for i, _ in head]  # superseded: already scaled down
    if len(tiers_of.named_docs) >= 2:  # "A条例和B办法分别…": the best passage of each named document up front
        firsts = {}
        for n, (i, _) in enumerate(head):
            firsts.setdefault(chunks[i].source, n)
        for src, n in firsts.items():
            if src in tiers_of.named_docs and tiers[n] == IN_NAMED_DOC:
                tiers[n] = NAMED_ELSEWHERE
    if len(set(tiers)) <= 1:
        return scored
    return [x for _, x in sorted(zip(tiers, head), key=lambda t: t[0])] + tail


def absent_articles(q: Question, docs: dict[str, DocInfo]) -> str:
    """"《中华人民共和国科学技术普及法》共六十条，没有第六十一条。" when the question names an article of a named
    regulation (the version it asks for) that does not have it; "" otherwise. A fact of the document's
    structure, so the answer says so instead of quoting another law's article."""
    if not q.articles or not q.documents:
        return ""
    named = sorted(named_sources(q, docs))
    want = wanted_versions(q, docs)
    named = [s for s in named if want is None or not (docs[s].version and docs[s].version.siblings) or s in want]
    if not named or not all(docs[s].meta.regulation and docs[s].articles for s in named):
        return ""
    if any(set(q.articles) & docs[s].articles for s in named):
        return ""
    info = docs[named[0]]
    title = info.meta.title or named[0]
    missing = "、".join(f"第{cn_numeral(n)}条" for n in q.articles)
    return f"《{title}》共{cn_numeral(max(info.articles))}条，没有{missing}。"


def content_query(q: Question, docs: dict[str, DocInfo]) -> str:
    """The question without the names of the corpus documents it names: those words match the title
    every chunk of that document carries, and would rank its shortest chunks first whatever they say.
    The document constraint is applied by `rerank` instead."""
    text = q.text
    if not named_sources(q, docs):
        return text
    for d in sorted(q.documents, key=len, reverse=True):
        text = text.replace(f"《{d}》", " ").replace(d, " ")
    return text if text.strip(" ，,。？?的和与及") else q.text


_VERSION_WORDS = re.compile(rf"[（(]?{YEAR}\s*年?\s*(?:版|修订版?|修正版?|修订后|修正后)?[)）]?(?:的|后的)?")


def reading_query(q: Question, docs: dict[str, DocInfo]) -> str:
    """What the reading model reads: the question without the documents it names and, for a text with
    several versions, without the version's year ("2002年版…"); both are constraints the tiers apply, and
    the reader would otherwise favour passages that repeat them (a 施行 date for "2002年版")."""
    text = content_query(q, docs)
    if text is q.text or not any(docs[s].version and docs[s].version.siblings for s in named_sources(q, docs)):
        return text
    stripped = _VERSION_WORDS.sub(" ", text)
    return stripped if stripped.strip(" ，,。？?的和与及") else text


def in_force_on(date: str, docs: dict[str, DocInfo]) -> set[str]:
    """Sources in force on an ISO date: put in force on or before it, and of a version group the newest
    such version. Documents that state no date count as in force."""
    out, best = set(), {}
    for s, info in docs.items():
        since = info.meta.in_force_since()
        if since and since > date:
            continue
        if info.version and info.version.siblings:
            g = info.version.group
            if g not in best or since > best[g][0]:
                best[g] = (since, s)
        else:
            out.add(s)
    return out | {s for _, s in best.values()}


def matching_sources(names: list[str], docs: dict[str, DocInfo]) -> set[str]:
    """Sources a user's document filter names: the file name or a part of the title."""
    out = set()
    for n in names:
        key = normalize(n).replace(" ", "")
        for s, info in docs.items():
            if key in s or key in normalize(info.meta.title).replace(" ", "") or any(key in x for x in info.names):
                out.add(s)
    return out


def label(chunk: Chunk, info: DocInfo | None) -> str:
    """《社会团体登记管理条例》第二十九条 for an article of a regulation, else ""."""
    if not chunk.article:
        return ""
    title = info.meta.title if info is not None and info.meta.title else chunk.title.split(" ")[0]
    return f"《{title.strip('《》')}》{chunk.article}"


def annotate(hits: list[Hit], docs: dict[str, DocInfo]) -> list[Hit]:
    """Each hit's citation label and, from a superseded version, the note an answer carries."""
    for h in hits:
        info = docs.get(h.chunk.source)
        h.label = label(h.chunk, info)
        h.note = info.version.note() if info is not None and info.version else ""
        h.versions = info.version.group if info is not None and info.version and info.version.siblings else ""
    return hits
