"""What a policy document says about itself: title, issuing body, document number, the dates it was
adopted, revised and put in force, read from its header lines, its last articles and its file name.
A sidecar `<file>.meta.toml` beside the document corrects any of them (staff know better than rules).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tomllib

from rag.ingest.cleaning import Para
from rag.lang.numbers import parse_cn_int
from rag.lang.text import CN_NUMERAL, normalize
from rag.lang.years import BARE as BARE_YEAR
from rag.lang.years import REVISED as REVISED_YEAR
from rag.lang.years import YEAR

SIDECAR = ".meta.toml"
FIELDS = ("title", "issuer", "number", "adopted", "revised", "effective", "published", "version", "group", "superseded")


@dataclass
class DocMeta:
    title: str = ""
    issuer: str = ""  # 国务院, 全国人民代表大会常务委员会, 中国科协
    number: str = ""  # 国务院令第250号, 连科协〔2018〕16号
    adopted: str = ""  # ISO dates: "2002-06-29"
    revised: list[str] = field(default_factory=list)
    effective: str = ""  # 施行
    published: str = ""  # 发布 / 公布 / 印发
    version: str = ""  # what staff call this version: "2024年修订版"; "" for a document with one version
    group: str = ""  # version group key: documents with the same key are versions of one text
    superseded: bool | None = None  # None: decided by the version group; a sidecar may force it
    regulation: bool = False  # articles are its units

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "DocMeta":
        d = dict(d or {})
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def latest(self) -> str:
        """The date this version took its text: the last revision, else adoption, publication or 施行."""
        return max([*self.revised, self.adopted, self.published, self.effective, ""])

    def in_force_since(self) -> str:
        return self.effective or self.latest()


_DATE_CN = re.compile(rf"([〇零一二三四五六七八九]{{4}})年([{CN_NUMERAL}]{{1,3}})月([{CN_NUMERAL}]{{1,3}})日")
_DATE = re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*日")
_NUMBER = re.compile(r"([\u4e00-\u9fff]{1,12}〔\d{4}〕\s*\d+\s*号|[\u4e00-\u9fff]{0,12}令\s*第\s*[\d" + CN_NUMERAL + r"]+\s*号)")
_ISSUER = re.compile(r"((?:全国|[\u4e00-\u9fff]{2,6}?(?:省|市|自治区|县|区))?人民代表大会常务委员会|国务院|"
                     r"[\u4e00-\u9fff]{2,6}?(?:省|市|县|区)人民政府|中国科学技术协会|中国科协|"
                     r"[\u4e00-\u9fff]{2,6}?(?:省|市|县|区)(?:科学技术协会|科协))")
_EFFECTIVE = re.compile(r"自(.{0,24}?)起(?:施行|实施|执行|生效)")
# A 公文's signature date (落款): a closing line that is a date, or an issuer followed by one.
_SIGNED = re.compile(r"^[\u4e00-\u9fff（）()]{0,30}\s*(?:\d{4}\s*年\s*\d{1,2}\s*月\s*\d{1,2}\s*日|[〇零一二三四五六七八九]{4}年[%s]{1,3}月[%s]{1,3}日)$" % (CN_NUMERAL, CN_NUMERAL))
# What makes two titles the same text: the national prefix, (试行), years and 修订 marks are not the name.
_GROUP_NOISE = re.compile(rf"^中华人民共和国|[（(](?:试行|暂行|修订|修正|草案)[）)]|试行|{YEAR}\s*年?\s*(?:修订|修正)?版?|修订|修正")


def _iso(y: str, m: str, d: str) -> str:
    return f"{int(y):04d}-{int(m):02d}-{int(d):02d}"


def dates_in(line: str) -> list[tuple[int, str]]:
    """(offset, ISO date) of each full date in a line, Arabic or Chinese numerals (二〇〇二年六月二十九日)."""
    out = [(m.start(), _iso(*m.groups())) for m in _DATE.finditer(line)]
    for m in _DATE_CN.finditer(line):
        y = "".join(str(parse_cn_int(ch) or 0) for ch in m.group(1))
        mo, d = parse_cn_int(m.group(2)), parse_cn_int(m.group(3))
        if mo and d:
            out.append((m.start(), _iso(y, str(mo), str(d))))
    return sorted(out)


def _classify(line: str, meta: DocMeta) -> None:
    """Dates of a header line by the verb after each: 通过 adopted, 修订/修正 revised, 发布/公布 published."""
    found = dates_in(line)
    for i, (pos, iso) in enumerate(found):
        end = found[i + 1][0] if i + 1 < len(found) else len(line)
        tail = line[pos:end]
        if re.search(r"修订|修正|修改", tail):
            meta.revised.append(iso)
        elif "通过" in tail:
            meta.adopted = meta.adopted or iso
        elif re.search(r"施行|实施|生效", tail):
            meta.effective = meta.effective or iso
        elif re.search(r"发布|公布|印发|颁布", tail):
            meta.published = meta.published or iso


def extract(paras: list[Para], source: str, title: str, regulation: bool) -> DocMeta:
    """Metadata from the text and the file name; empty fields where neither says."""
    meta = DocMeta(title=title, regulation=regulation)
    header: list[str] = []
    for p in paras[:12]:  # front matter: up to the first chapter or article
        t = p.text.strip().lstrip("#").strip()
        if re.match(rf"^第[{CN_NUMERAL}\d]+[编章节条]", t):
            break
        header.append(t)
    for line in header:
        _classify(line, meta)
        if not meta.number and (m := _NUMBER.search(line)):
            meta.number = re.sub(r"\s+", "", m.group(1))
        if not meta.issuer and (re.search(r"通过|发布|公布|印发|令", line)) and (m := _ISSUER.search(line)):
            meta.issuer = m.group(1)
    if not meta.issuer and meta.number and (m := _ISSUER.search(meta.number)):
        meta.issuer = m.group(1)
    # 施行 is usually said in the last articles: "本法自2022年1月1日起施行" / "自公布之日起施行".
    for p in reversed(paras[-8:]):
        m = _EFFECTIVE.search(p.text)
        if not m:
            continue
        d = dates_in(m.group(1))
        if d:
            meta.effective = meta.effective or d[0][1]
        elif re.search(r"公布|发布|印发", m.group(1)):
            meta.effective = meta.effective or meta.published or meta.latest()
        break
    if not meta.published:  # a letter or notice is dated where it is signed
        for p in reversed(paras[-6:]):
            if _SIGNED.match(p.text.strip()) and (d := dates_in(p.text)):
                meta.published = d[-1][1]
                break
    meta.revised = sorted(set(meta.revised))
    stem = Path(source).stem
    years = BARE_YEAR.findall(stem)
    rev = REVISED_YEAR.search(stem)
    if rev:
        meta.version = f"{rev.group(1)}年{rev.group(2)}版"
        if not any(r.startswith(rev.group(1)) for r in meta.revised):
            meta.revised.append(f"{rev.group(1)}-01-01")
    elif years:
        meta.version = f"{years[-1]}年版"
        if not meta.latest():
            meta.adopted = f"{years[-1]}-01-01"  # only the year is known: its first day orders versions
    meta.group = group_key(meta.title or stem)
    return meta


def group_key(title: str) -> str:
    t = normalize(title).replace(" ", "")
    t = _GROUP_NOISE.sub("", t)
    return re.sub(r"[_\-—（）()·\s]", "", t)


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR)


def read_sidecar(path: Path) -> dict:
    """The corrections in `<file>.meta.toml`; raises ValueError with a Chinese reason when it is broken."""
    p = sidecar_path(path)
    if not p.is_file():
        return {}
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"元数据文件 {p.name} 格式错误：{e}") from None
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ValueError(f"元数据文件 {p.name} 含未知字段：{'、'.join(unknown)}（可用：{'、'.join(FIELDS)}）")
    out = {}
    for k, v in data.items():
        if k == "revised":
            v = [str(x) for x in (v if isinstance(v, list) else [v])]
        elif k == "superseded":
            v = bool(v)
        else:
            v = str(v)
        out[k] = v
    return out


def apply_sidecar(meta: DocMeta, overrides: dict) -> DocMeta:
    d = meta.to_dict()
    d.update(overrides)
    if "title" in overrides and "group" not in overrides:
        d["group"] = group_key(overrides["title"])
    return DocMeta.from_dict(d)


@dataclass
class Version:
    """A document's place in its version group, as retrieval and answers use it."""

    source: str
    group: str
    label: str  # "2002年版"
    in_force: bool
    superseded_by: str = ""  # the source in force, where this one is superseded
    superseded_label: str = ""  # its label: "2024年修订版"
    siblings: tuple[str, ...] = ()  # every source of the group, newest first

    def note(self) -> str:
        """What an answer taken from this version says about it; "" for the version in force."""
        if self.in_force or not self.superseded_by:
            return ""
        return f"（{self.label or '旧版'}，已被{self.superseded_label or '新版'}取代）"


def group_versions(metas: dict[str, DocMeta]) -> dict[str, Version]:
    """Documents sharing a group key are versions of one text; the newest (by its own dates) is in force,
    unless a sidecar says which ones are superseded."""
    groups: dict[str, list[str]] = {}
    for source, m in metas.items():
        if m.group:
            groups.setdefault(m.group, []).append(source)
    out: dict[str, Version] = {}
    for key, sources in groups.items():
        ordered = sorted(sources, key=lambda s: (metas[s].superseded is not True, metas[s].latest(), s), reverse=True)
        current = next((s for s in ordered if metas[s].superseded is not True), ordered[0])
        for s in ordered:
            superseded = len(ordered) > 1 and (metas[s].superseded is True or (s != current and metas[s].superseded is None))
            out[s] = Version(s, key, metas[s].version, not superseded, current if superseded else "",
                             metas[current].version if superseded else "", tuple(ordered) if len(ordered) > 1 else ())
    return out
