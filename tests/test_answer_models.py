"""The trained answer models: the shipped file loads and says what it was trained from, tree inference matches
scikit-learn's, a model trained on other features is refused, and the training script reproduces itself."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import PROJECT_ROOT

from rag.answer.features import ANSWERABILITY_FEATURES, RANKER_FEATURES
from rag.answer.ranker import DEFAULT_PATH, AnswerModels, ModelError

CMRC_TRAIN = PROJECT_ROOT.parent / "shared" / "bench" / "cmrc2018_train.json"


def test_shipped_models_load_and_record_their_provenance():
    m = AnswerModels.load()
    assert m.ranker.features == RANKER_FEATURES and m.answerability.features == ANSWERABILITY_FEATURES
    assert 0 < m.threshold < 1
    assert m.info["seed"] == 13 and m.info["commit"] and "cmrc2018_train" in m.info["data"]
    assert DEFAULT_PATH.stat().st_size < 1_000_000  # a small committed file
    curve = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))["answerability"]["curve_val"]
    assert [p["threshold"] for p in curve] == sorted(p["threshold"] for p in curve)


def test_tree_inference_matches_scikit_learn(tmp_path):
    from sklearn.ensemble import HistGradientBoostingClassifier

    sys.path.insert(0, str(PROJECT_ROOT))
    from train.answer_models import fit_trees

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, len(ANSWERABILITY_FEATURES)))
    y = X[:, 0] + 0.5 * X[:, 3] * X[:, 1] > 0.2
    ours, _ = fit_trees(X, y, seed=1, features=ANSWERABILITY_FEATURES)
    ref = HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=15, random_state=1, early_stopping=False).fit(X, y)
    Xt = rng.normal(size=(50, len(ANSWERABILITY_FEATURES)))
    assert np.allclose(ours.proba(Xt), ref.predict_proba(Xt)[:, 1], atol=1e-5)


def test_a_model_for_other_features_is_refused_with_the_file_named(tmp_path):
    d = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    d["ranker"]["features"] = d["ranker"]["features"][:-1]
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(ModelError, match="old.json"):
        AnswerModels.load(bad)
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(ModelError, match="broken.json"):
        AnswerModels.load(tmp_path / "broken.json")


@pytest.mark.skipif(not CMRC_TRAIN.is_file(), reason="../shared/bench/cmrc2018_train.json is not present")
def test_training_is_reproducible_with_a_fixed_seed(tmp_path):
    outs = []
    for n in (1, 2):
        out = tmp_path / f"m{n}.json"
        # Small: 150 questions, 20 embedded CMRC paragraphs, no corpus-extra; one vector cache for both runs.
        r = subprocess.run([sys.executable, "-m", "train.answer_models", "--limit", "150", "--dense-paragraphs", "20",
                            "--extra", str(tmp_path / "none.jsonl"), "--cache-dir", str(tmp_path / "cache"),
                            "--out", str(out)],
                           cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        d = json.loads(out.read_text(encoding="utf-8"))
        outs.append({k: d[k] for k in ("ranker", "answerability")})
    assert outs[0] == outs[1]
    AnswerModels.load(tmp_path / "m1.json")  # what the script writes is what the product reads
