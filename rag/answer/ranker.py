"""The trained answer models: a sentence ranker and an answerability model over `features`, each a
logistic regression or a small set of gradient-boosted trees (the training script picks by measurement),
read from a JSON file written by `train/answer_models.py`. Inference only, with numpy: the product never
trains at run time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.answer.features import ANSWERABILITY_FEATURES, RANKER_FEATURES

DEFAULT_PATH = Path(__file__).with_name("answer_models.json")


class ModelError(Exception):
    """The model file is missing, unreadable or was trained on other features: str() says which."""


@dataclass
class Linear:
    """Standardised logistic regression: logit = ((x - mean) / scale) · coef + intercept."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def from_json(cls, d: dict, expected: tuple[str, ...], path: Path) -> "Linear":
        if tuple(d["features"]) != expected:
            raise ModelError(f"{path}：模型的特征与代码不一致（请重新训练：make train）")
        arr = lambda k: np.asarray(d[k], dtype=np.float64)  # noqa: E731
        return cls(expected, arr("mean"), arr("scale"), arr("coef"), float(d["intercept"]))

    def logits(self, X: np.ndarray) -> np.ndarray:
        if len(X) == 0:
            return np.zeros(0)
        return ((np.asarray(X, dtype=np.float64) - self.mean) / self.scale) @ self.coef + self.intercept

    def proba(self, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(X)))


@dataclass
class Trees:
    """Gradient-boosted regression trees: logit = baseline + the sum of each tree's leaf value.
    A node sends x to `left` when x[feature] <= threshold (as scikit-learn's HistGradientBoosting does)."""

    features: tuple[str, ...]
    baseline: float
    feature: np.ndarray  # (trees, nodes) int
    threshold: np.ndarray  # (trees, nodes)
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    leaf: np.ndarray  # bool
    depth: int

    @classmethod
    def from_json(cls, d: dict, expected: tuple[str, ...], path: Path) -> "Trees":
        if tuple(d["features"]) != expected:
            raise ModelError(f"{path}：模型的特征与代码不一致（请重新训练：make train）")
        trees = d["trees"]
        width = max(len(t["value"]) for t in trees)

        def pad(key, fill, dtype):
            return np.array([t[key] + [fill] * (width - len(t[key])) for t in trees], dtype=dtype)

        return cls(expected, float(d["baseline"]), pad("feature", 0, np.int64), pad("threshold", 0.0, np.float64),
                   pad("left", 0, np.int64), pad("right", 0, np.int64), pad("value", 0.0, np.float64),
                   pad("leaf", True, bool), int(d["depth"]))

    def logits(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if len(X) == 0:
            return np.zeros(0)
        n_trees = len(self.value)
        t = np.arange(n_trees)[:, None]
        node = np.zeros((n_trees, len(X)), dtype=np.int64)  # every row starts at each tree's root
        rows = np.arange(len(X))[None, :]
        for _ in range(self.depth):
            f = self.feature[t, node]
            go_left = X[rows, f] <= self.threshold[t, node]
            nxt = np.where(go_left, self.left[t, node], self.right[t, node])
            node = np.where(self.leaf[t, node], node, nxt)
        return self.baseline + self.value[t, node].sum(axis=0)

    def proba(self, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(X)))


def _model(d: dict, expected: tuple[str, ...], path: Path) -> "Linear | Trees":
    return (Trees if d.get("type") == "trees" else Linear).from_json(d, expected, path)


@dataclass
class AnswerModels:
    ranker: "Linear | Trees"
    answerability: "Linear | Trees"
    threshold: float  # refuse below this answerability probability (chosen on a validation split)
    info: dict  # what it was trained from: data, commit, seed, measured figures

    @classmethod
    def load(cls, path: Path | None = None) -> "AnswerModels":
        path = Path(path or DEFAULT_PATH)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            return cls(_model(d["ranker"], RANKER_FEATURES, path), _model(d["answerability"], ANSWERABILITY_FEATURES, path),
                       float(d["answerability"]["threshold"]), d.get("trained", {}))
        except ModelError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelError(f"无法读取答案模型 {path}：{type(e).__name__}: {e}") from e
