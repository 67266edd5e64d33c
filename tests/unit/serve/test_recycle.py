"""The recycle bin (rag/serve/recycle.py) and the registry's delete / restore of bases and documents:
kept 7 days, restorable by whoever deleted them, the base's owner or the admin, and by no one else."""

from __future__ import annotations

import pytest

from rag.serve.kbs import DEFAULT_ID, KBError, Registry
from rag.serve.recycle import KEEP_DAYS, RecycleBin, RecycleError
from rag.settings import load_settings

DAY = 86400


def settings(tmp_path, **kw):
    return load_settings(env={}, corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index", data_dir=str(tmp_path / "data"), **kw)


class Clock:
    def __init__(self):
        self.t = 1_000_000.0

    def __call__(self):
        return self.t


def test_items_expire_after_seven_days_and_half_written_ones_are_ignored(tmp_path):
    clock = Clock()
    bin_ = RecycleBin(tmp_path / "bin", clock)
    f = tmp_path / "a.txt"
    f.write_text("内容", encoding="utf-8")
    item = bin_.put("document", f, "a.txt", "k", "库", "alice")
    assert not f.exists() and [i.id for i in bin_.items()] == [item.id]
    assert item.days_left(clock.t) == KEEP_DAYS
    (tmp_path / "bin" / "broken").mkdir()  # a crash between mkdir and the record
    clock.t += (KEEP_DAYS - 1) * DAY
    assert [i.id for i in bin_.items()] == [item.id] and bin_.items()[0].days_left(clock.t) == 1
    clock.t += DAY + 1
    assert bin_.items() == [] and not (tmp_path / "bin" / item.id).exists()  # removed for good
    with pytest.raises(RecycleError, match="7 天"):
        bin_.get(item.id)


def test_take_never_overwrites(tmp_path):
    bin_ = RecycleBin(tmp_path / "bin")
    f = tmp_path / "a.txt"
    f.write_text("旧", encoding="utf-8")
    item = bin_.put("document", f, "a.txt", "k", "库", "")
    f.write_text("新上传的同名文件", encoding="utf-8")
    with pytest.raises(RecycleError, match="同名"):
        bin_.take(item, f)
    assert f.read_text(encoding="utf-8") == "新上传的同名文件" and bin_.items()  # both kept


def logins(tmp_path):
    return settings(tmp_path, auth_user="admin", auth_password="pw", users={"alice": "a", "bob": "b", "carol": "c"},
                    grants={"carol": ["财务"]})


def test_a_deleted_base_comes_back_with_its_files_and_grants(tmp_path):
    reg = Registry(logins(tmp_path))
    base = reg.create("财务", "bob")
    reg.grant("alice", base.id)
    base.corpus_dir.mkdir(parents=True, exist_ok=True)
    (base.corpus_dir / "预算.txt").write_text("2024年预算120万元。", encoding="utf-8")
    item = reg.delete(base.id, "bob")
    assert "财务" not in {b.name for b in reg.all()} and not base.corpus_dir.exists()
    assert [i.id for i in reg.restorable("bob")] == [item.id]  # its owner
    assert [i.id for i in reg.restorable("admin")] == [item.id]
    assert reg.restorable("alice") == [] and reg.restorable("carol") == []  # granted to read: not to restore
    with pytest.raises(KBError, match="没有这一项"):
        reg.restore(item.id, "alice")
    reg.create("财务", "carol")  # the name was taken meanwhile
    got, back = reg.restore(item.id, "bob")
    assert back.id == base.id and back.name == "财务（恢复）" and back.owner == "bob"
    assert (back.corpus_dir / "预算.txt").read_text(encoding="utf-8") == "2024年预算120万元。"
    assert reg.get(base.id, "alice").id == base.id  # the grant came back
    assert reg.restorable("admin") == []


def test_a_deleted_document_comes_back_for_its_manager_only(tmp_path):
    reg = Registry(logins(tmp_path))
    base = reg.create("财务", "bob")
    base.corpus_dir.mkdir(parents=True, exist_ok=True)
    (base.corpus_dir / "预算.txt").write_text("2024年预算120万元。", encoding="utf-8")
    with pytest.raises(KBError, match="只能查看|不存在或无权访问"):
        reg.delete_document(base.id, "预算.txt", "carol")  # may read, may not delete
    with pytest.raises(KBError, match="文件不存在"):
        reg.delete_document(base.id, "没有.txt", "bob")
    with pytest.raises(KBError, match="只能访问语料目录"):
        reg.delete_document(base.id, "../../kexie.db", "bob")
    item = reg.delete_document(base.id, "预算.txt", "bob")
    assert not (base.corpus_dir / "预算.txt").exists() and item.label == "文档“预算.txt”（知识库“财务”）"
    assert reg.restorable("carol") == [] and [i.id for i in reg.restorable("admin")] == [item.id]
    reg.restore(item.id, "admin")
    assert (base.corpus_dir / "预算.txt").exists()


def test_a_document_of_a_deleted_base_waits_for_the_base(tmp_path):
    reg = Registry(settings(tmp_path))  # login off: one trusted office
    base = reg.create("财务")
    base.corpus_dir.mkdir(parents=True, exist_ok=True)
    (base.corpus_dir / "a.txt").write_text("甲。", encoding="utf-8")
    doc = reg.delete_document(base.id, "a.txt")
    kb_item = reg.delete(base.id)
    with pytest.raises(KBError, match="请先恢复知识库"):
        reg.restore(doc.id)
    reg.restore(kb_item.id)
    reg.restore(doc.id)
    assert (base.corpus_dir / "a.txt").read_text(encoding="utf-8") == "甲。"
    with pytest.raises(KBError, match="默认知识库不能删除"):
        reg.delete(DEFAULT_ID)
