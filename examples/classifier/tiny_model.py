"""A real, tiny model: a two-layer perceptron that classifies 4 float features into
3 classes. Weights ship in the repo (`models/<version>.npz`, a few KB each), so no
download ever happens at run time.

This module is pure numpy: the Serve deployment in `model.py` wraps it, and
`train.py` regenerates the shipped weights deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CODE_DIR = Path(__file__).resolve().parent
MODELS_DIR = CODE_DIR / "models"
N_FEATURES = 4
CLASSES = ("setosa", "versicolor", "virginica")


@dataclass(frozen=True)
class TinyModel:
    w1: np.ndarray  # (N_FEATURES, hidden)
    b1: np.ndarray  # (hidden,)
    w2: np.ndarray  # (hidden, len(CLASSES))
    b2: np.ndarray  # (len(CLASSES),)

    @classmethod
    def load(cls, path: str | Path) -> "TinyModel":
        """Load weights from an .npz artifact; raise with the path if it is unusable."""
        path = Path(path)
        if not path.is_absolute():  # relative to the code dir, which ships with the model
            path = CODE_DIR / path
        with np.load(path) as npz:
            model = cls(w1=npz["w1"], b1=npz["b1"], w2=npz["w2"], b2=npz["b2"])
        if model.w1.shape[0] != N_FEATURES or model.w2.shape[1] != len(CLASSES):
            raise ValueError(
                f"model artifact {path} has shapes {model.w1.shape}/{model.w2.shape}; "
                f"expected ({N_FEATURES}, h)/(h, {len(CLASSES)})"
            )
        return model

    def save(self, path: str | Path) -> None:
        np.savez(path, w1=self.w1, b1=self.b1, w2=self.w2, b2=self.b2)

    def probabilities(self, features: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        hidden = np.tanh(features @ self.w1 + self.b1)
        logits = (hidden @ self.w2 + self.b2) / temperature
        logits = logits - logits.max(axis=-1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=-1, keepdims=True)

    def predict(self, features: list[float], temperature: float = 1.0) -> dict:
        if len(features) != N_FEATURES:
            raise ValueError(f"expected {N_FEATURES} features, got {len(features)}")
        probs = self.probabilities(np.asarray(features, dtype=np.float64), temperature)
        best = int(probs.argmax())
        return {
            "label": CLASSES[best],
            "probabilities": [round(float(p), 6) for p in probs],
        }
