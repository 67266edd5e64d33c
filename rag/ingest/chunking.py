"""Split cleaned paragraphs into chunks on Chinese heading, clause and sentence boundaries.

Sentences are packed by hand (not with a generic text splitter) because every sentence carries its
page and heading path, which citations need.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from rag.ingest import limits
from rag.ingest.cleaning import Para
from rag.lang import fingerprint, lists, numbers, sentences, tables, years
from rag.lang import places as place_rules
from rag.lang import text as text_rules
from rag.lang.lists import HEADING_LEVELS, HEADING_NUMERAL
from rag.lang.numbers import parse_cn_int
from rag.lang.places import dominant_place, place_counts
from rag.lang.sentences import CLOSERS, SENTENCE, TERMINAL
from rag.lang.text import has_han, normalize
from rag.lang.years import YEAR
from rag.models import Chunk

_NUM = HEADING_NUMERAL
_MD = re.compile(r"^(#{1,6})\s+(.*)$")
_CHAPTER = re.compile(rf"^第[{_NUM}\d]+[编章](?:\s|$)")
_SECTION = re.compile(rf"^第[{_NUM}\d]+节(?:\s|$)")
_ARTICLE = re.compile(rf"^(第([{_NUM}\d]+)条)(?:之[{_NUM}]+)?(?=[\s　【（(]|$|[^，。、的款项])")
# A document is read as a regulation (articles are its units) when this many paragraphs open an article.
MIN_ARTICLES = 3
PLAIN_HEADING_MAX = 40
# Bump when chunking or cleaning logic changes: the indexer then re-chunks every file (vectors of chunks
# whose text did not change are reused). A change to a language rule table it reads re-chunks by itself.
CHUNKER_VERSION = "6." + fingerprint(text_rules, sentences, lists, tables, numbers, years, place_rules)  # 6: page furniture


@dataclass
class _Block:
    text: str
    page: int | None
    ocr: bool
    heading: str  # heading path at this block, clause label included
    section: str  # heading path of the enclosing section
    hard: bool  # a hard boundary (new section) precedes this block
    table: bool = False  # a markdown table row


def _heading_of(text: str) -> tuple[int, str, bool] | None:
    """(level, label, is_pure_heading) if the paragraph starts a heading or clause, else None."""
    t = text.strip().strip("*").strip()
    if tables.is_row(t):
        return None
    m = _MD.match(t)
    if m:
        return len(m.group(1)), m.group(2).strip().strip("*#").strip(), True
    short = len(t) <= PLAIN_HEADING_MAX and not t.rstrip(CLOSERS + "*")[-1:] in TERMINAL
    if _CHAPTER.match(t):
        return 1, t, True
    if _SECTION.match(t):
        return 2, t, True
    m = _ARTICLE.match(t)
    if m:
        return 6, m.group(1), False
    for level, rx in HEADING_LEVELS:
        if rx.match(t):
            if short:
                return level, t, True
            # A marked item with body text: a boundary, labelled by its first clause.
            return level, re.split(r"[：:。；，,]", t, maxsplit=1)[0][:30], False
    if short and not t.endswith(("：", ":", "，", ",")):
        return 7, t, True
    return None


# Lines that head a document without naming it: a chapter or item heading, an issuance or date line
# ("1998年10月25日 国务院令第250号发布"), a table of contents. Never a headline, so never document context.
_NOT_HEADLINE = re.compile(rf"^(?:第[{_NUM}\d]+[编章节条]|[{_NUM}]+[、.．]|[（(][{_NUM}\d]+[）)]|\d+[.、．])"
                           r"|\d{4}\s*年\s*\d{1,2}\s*月|[〔\[]\d{4}[〕\]]|令第|^目\s*录$")


def _headlines(paras: list[Para]) -> list[str]:
    """The document's first one or two heading lines (its headline and subtitle)."""
    lines: list[str] = []
    for p in paras[:6]:
        h = _heading_of(p.text)
        if h and h[2] and _NOT_HEADLINE.search(h[1]):
            if lines:
                break
            continue
        if h and h[2] and len(lines) < 2:
            lines.append(h[1])
        elif lines or len(p.text) > PLAIN_HEADING_MAX:
            break
    return lines


def document_title(paras: list[Para], source: str) -> str:
    """The document's own name: its headline, else the file name without years and separators."""
    lines = _headlines(paras)
    if lines:
        return lines[0]
    stem = source.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return re.sub(r"[_\s]+", " ", re.sub(rf"[_\s]*{YEAR}[年]?(?:修订|修正)?", "", stem)).strip()


def document_contexts(paras: list[Para], source: str) -> tuple[str, str]:
    """(title, context) carried by every chunk, since documents often say only "市科协".

    title: the file name (when it reads as a name), the document's headline, and its dominant place
    name: shown and indexed for BM25. context: the same from the text alone, which is what the vectors
    embed, so renaming a file re-embeds nothing."""
    headlines = _headlines(paras)
    stem = re.sub(r"[_\s]+", " ", source.rsplit("/", 1)[-1].rsplit(".", 1)[0]).strip()
    parts = [stem] if has_han(stem) else []  # a file name like "000_1a2b.txt" says nothing: no noise
    for line in headlines:
        if normalize(line) not in normalize(" ".join(parts)):
            parts.append(line)
    place: list[str] = []  # the dominant place, computed once and only if one of the two needs it

    def with_place(ctx: str) -> str:
        if place_counts(ctx):
            return ctx
        if not place:
            place.append(dominant_place(" ".join(p.text for p in paras)))
        if not place[0]:
            return ctx
        return f"{place[0]}｜{ctx}" if ctx else place[0]

    return with_place(" ".join(parts)), with_place(" ".join(headlines))



def article_label(text: str) -> str:
    """"第二十九条" when the paragraph opens an article, "" otherwise (also for a paragraph that opens with a
    cross-reference: "第三条的规定…", "第三条、第四条…")."""
    m = _ARTICLE.match(text.strip().strip("*").strip())
    return m.group(1) if m and parse_cn_int(m.group(2)) else ""


def is_regulation(paras: list[Para]) -> bool:
    """Laws, regulations, measures and rules: several paragraphs open with 第X条."""
    return sum(1 for p in paras if article_label(p.text)) >= MIN_ARTICLES


def _structural(h: tuple[int, str, bool] | None, text: str) -> bool:
    """A heading that ends an article: 编/章/节, or a markdown heading that is not an item."""
    if not h or not h[2]:
        return False
    t = text.strip().strip("*").strip()
    return h[0] <= 2 or bool(_CHAPTER.match(t) or _SECTION.match(t) or re.match(r"^附\s*[则件录]", t))


def _regulation_blocks(paras: list[Para]) -> list[_Block]:
    """Articles as units: an article (its heading, 款 and 项) is one group under its 编/章/节 path;
    lines before the first chapter or article are the document's front matter, kept as text."""
    stack: list[list] = []  # structural headings only: [level, label, used_by_body, page, ocr]
    blocks: list[_Block] = []
    article = ""
    started = False  # past the front matter

    def push(level: int, label: str, p: Para) -> None:
        while stack and stack[-1][0] >= level:
            pop()
        stack.append([level, label, False, p.page, p.ocr])

    def pop() -> None:
        # A heading nothing came under (an empty chapter, a last line) is kept as text: no text is lost.
        level, label, used, page, ocr = stack.pop()
        if not used:
            parent = " > ".join(x[1] for x in stack)
            blocks.append(_Block(label, page, ocr, parent, parent, True))

    def add(block: _Block) -> None:
        for entry in stack:
            entry[2] = True
        blocks.append(block)

    for p in paras:
        h = _heading_of(p.text)
        label = article_label(p.text)
        section = " > ".join(x[1] for x in stack)
        if label:
            started = True
            article = label
            path = " > ".join(x for x in (section, label) if x)
            add(_Block(p.text, p.page, p.ocr, path, path, True))
            continue
        if _structural(h, p.text) and (started or _CHAPTER.match(p.text.strip().strip("#* "))):
            started = True
            article = ""
            push(h[0], h[1], p)
            continue
        if article:  # a 款 or 项 of the current article
            path = f"{section} > {article}" if section else article
            add(_Block(p.text, p.page, p.ocr, path, path, False, tables.is_row(p.text)))
            continue
        if h and h[2] and _MD.match(p.text.strip()) and not started:
            # The document's own markdown title heads the front matter; later headings nest under it.
            push(h[0], h[1], p)
            continue
        add(_Block(p.text, p.page, p.ocr, section, section, not blocks or blocks[-1].section != section,
                   tables.is_row(p.text)))
    while stack:
        pop()
    return blocks


def _blocks(paras: list[Para]) -> list[_Block]:
    if is_regulation(paras):
        return _regulation_blocks(paras)
    stack: list[list] = []  # [level, label, used_by_body, page, ocr]
    blocks: list[_Block] = []
    last_was_heading = False

    def pop() -> None:
        # A heading that never got body text (a caption, an ad slogan) is kept as text of its own.
        level, label, used, page, ocr = stack.pop()
        if not used:
            parent = " > ".join(x[1] for x in stack)
            blocks.append(_Block(label, page, ocr, parent, parent, True))

    for p in paras:
        h = _heading_of(p.text)
        if h and h[2]:
            level, label, _ = h
            # A byline or subtitle right under a heading joins it ("汇聚资源… / 曾能建 福建省科协…").
            if last_was_heading and stack and stack[-1][0] == level and (len(label) <= 20 or label.startswith("——")):
                stack[-1][1] += " " + label
            else:
                while stack and stack[-1][0] >= level:
                    pop()
                stack.append([level, label, False, p.page, p.ocr])
            last_was_heading = True
            continue
        hard = last_was_heading or not blocks
        for entry in stack:
            entry[2] = True
        section = " > ".join(x[1] for x in stack)
        path = section
        if h:  # clause / marked item with body: a soft boundary whose label extends the heading path
            path = " > ".join(x for x in (section, h[1]) if x)
        blocks.append(_Block(p.text, p.page, p.ocr, path, section, hard, tables.is_row(p.text)))
        last_was_heading = False
    while stack:
        pop()
    return blocks


def _sentences(text: str, size: int) -> list[str]:
    out = []
    for s in SENTENCE.findall(text):
        start = 0  # an offset, not s = s[cut:]: linear in a sentence of millions of characters
        while len(s) - start > size:  # an over-long sentence: cut at a comma, else hard
            comma = max(s.rfind("，", start, start + size), s.rfind(",", start, start + size))
            cut = comma - start + 1 if comma - start > size // 3 else size
            piece = s[start:start + cut]
            if piece.strip():  # a hard cut inside a run of spaces leaves nothing worth a chunk
                out.append(piece)
            start += cut
            limits.tick()
        if start:
            s = s[start:]
        if s.strip():
            out.append(s)
    return out


def chunk_document(paras: list[Para], source: str, size: int = 300, overlap: int = 60) -> list[Chunk]:
    """Chunks of about `size` characters; paragraphs are kept whole when they fit, sentences never split
    unless longer than `size`; the last sentences of a chunk (up to `overlap` chars) open the next one
    within a section."""
    title, context = document_contexts(paras, source)
    # (section, table?, sentences or rows); chunks never cross sections, and tables are chunked on their own.
    groups: list[tuple[str, bool, list]] = []
    for b in _blocks(paras):
        limits.tick()
        if b.hard or not groups or groups[-1][0] != b.section or groups[-1][1] != b.table:
            groups.append((b.section, b.table, []))
        if b.table:
            groups[-1][2].append(b)
            continue
        sents = _sentences(b.text, size)
        para_len = sum(len(x) for x in sents)
        groups[-1][2].extend(_Sent(s, b.page, b.ocr, i == 0, b.heading, para_len) for i, s in enumerate(sents))

    chunks: list[Chunk] = []
    for _section, is_table, items in groups:
        if is_table:
            _emit_table(chunks, items, size, title, context, source)
            continue
        cur: list[_Sent] = []
        fresh = 0  # sentences in cur that are not overlap
        for item in items:
            length = sum(len(s.text) for s in cur)
            # Keep a paragraph (a clause, a list item) whole when it fits in a chunk of its own.
            need = item.para_len if item.para_start and item.para_len <= size else len(item.text)
            if cur and fresh and length + need > size:
                _emit(chunks, cur, fresh, title, context, source)
                tail: list[_Sent] = []
                # A chunk that ends mid-paragraph hands its last sentences on as overlap;
                # one that ends at a paragraph boundary starts the next cleanly.
                if not item.para_start:
                    for s in reversed(cur):
                        if sum(len(x.text) for x in tail) + len(s.text) > overlap:
                            break
                        tail.insert(0, s)
                cur, fresh = tail, 0
            cur.append(item)
            fresh += 1
        if cur and fresh:
            _emit(chunks, cur, fresh, title, context, source)
    ensure_unique_ids(chunks)
    return chunks


@dataclass
class _Sent:
    text: str
    page: int | None
    ocr: bool
    para_start: bool
    heading: str
    para_len: int


def _common_heading(headings: list[str]) -> str:
    """The deepest heading path shared by all sentences (a chunk of list items 1.-4. gets the list's heading)."""
    parts = [h.split(" > ") if h else [] for h in headings]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return " > ".join(common)


def _emit(chunks: list[Chunk], sents: list[_Sent], fresh: int, title: str, context: str, source: str) -> None:
    text = ""
    for s in sents:
        text += ("\n" if text and s.para_start else "") + s.text
    new = sents[len(sents) - fresh :]
    heading = _common_heading([s.heading for s in new])
    chunk = Chunk(
        id="",
        source=source,
        title=title,
        heading=heading,
        page=new[0].page,
        position=len(chunks),
        text=text.strip(),
        ocr=any(s.ocr for s in sents),
        context=context,
        article=_leaf_article(heading),
    )
    limits.add_chunk(len(chunk.text))  # MAX_CHUNKS per file, checked as they are made
    # Content-addressed by what is embedded: unchanged text keeps its vector, whatever the file is called.
    chunk.id = hashlib.sha1(chunk.vector_text.encode("utf-8")).hexdigest()[:20]
    chunks.append(chunk)


def _emit_table(chunks: list[Chunk], rows: list[_Block], size: int, title: str, context: str, source: str) -> None:
    """Rows packed up to `size` characters, each chunk opening with the table's header row."""
    lines = [b for b in rows if not tables.is_separator(b.text)]
    if not lines:
        return
    head, body = lines[0], lines[1:] or []
    header = f"{head.text.strip()}\n|{'---|' * len(tables.cells(head.text))}"
    batch: list[_Block] = []

    def flush() -> None:
        first = batch[0] if batch else head
        text = header + "".join("\n" + b.text.strip() for b in batch)
        limits.add_chunk(len(text))
        chunk = Chunk(id="", source=source, title=title, heading=head.heading, page=first.page,
                      position=len(chunks), text=text, ocr=any(b.ocr for b in [head, *batch]), context=context,
                      article=_leaf_article(head.heading), kind="table")
        chunk.id = hashlib.sha1(chunk.vector_text.encode("utf-8")).hexdigest()[:20]
        chunks.append(chunk)

    for b in body:
        if batch and len(header) + sum(len(x.text) + 1 for x in batch) + len(b.text) > size:
            flush()
            batch = []
        batch.append(b)
    flush()


def _leaf_article(heading: str) -> str:
    leaf = heading.rsplit(" > ", 1)[-1]
    return leaf if leaf and article_label(leaf) == leaf else ""


def ensure_unique_ids(chunks: list[Chunk]) -> None:
    """Identical chunks within one document get distinct ids (position-salted)."""
    seen: set[str] = set()
    for c in chunks:
        if c.id in seen:
            c.id = hashlib.sha1(f"{c.id}:{c.position}".encode()).hexdigest()[:20]
        seen.add(c.id)
