"""Regenerate the shipped weights: `python examples/classifier/train.py`.

Each version trains on the same synthetic 3-class data with its own seed and hidden
size, by plain gradient descent, so v1 and v2 are both sensible classifiers that give
visibly different probabilities for the same input.
"""

from __future__ import annotations

import numpy as np

from tiny_model import CLASSES, MODELS_DIR, N_FEATURES, TinyModel

CENTRES = np.array(
    [[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]]
)
VERSIONS = {"v1": (1, 6, 150), "v2": (2, 8, 600)}  # version: (seed, hidden, steps)


def synthetic_data(rng: np.random.Generator, per_class: int = 60):
    xs = np.concatenate([c + rng.normal(0, 0.35, (per_class, N_FEATURES)) for c in CENTRES])
    ys = np.repeat(np.arange(len(CLASSES)), per_class)
    return xs, ys


def train(seed: int, hidden: int, steps: int, lr: float = 0.05) -> TinyModel:
    rng = np.random.default_rng(seed)
    xs, ys = synthetic_data(rng)
    onehot = np.eye(len(CLASSES))[ys]
    model = TinyModel(
        w1=rng.normal(0, 0.5, (N_FEATURES, hidden)),
        b1=np.zeros(hidden),
        w2=rng.normal(0, 0.5, (hidden, len(CLASSES))),
        b2=np.zeros(len(CLASSES)),
    )
    for _ in range(steps):
        h = np.tanh(xs @ model.w1 + model.b1)
        probs = model.probabilities(xs)
        grad_logits = (probs - onehot) / len(xs)
        grad_h = grad_logits @ model.w2.T * (1 - h**2)
        model.w2[...] -= lr * h.T @ grad_logits
        model.b2[...] -= lr * grad_logits.sum(axis=0)
        model.w1[...] -= lr * xs.T @ grad_h
        model.b1[...] -= lr * grad_h.sum(axis=0)
    return model


def main() -> None:
    MODELS_DIR.mkdir(exist_ok=True)
    for version, (seed, hidden, steps) in VERSIONS.items():
        model = train(seed, hidden, steps)
        model.save(MODELS_DIR / f"{version}.npz")
        print(version, model.predict([5.9, 3.0, 4.2, 1.5]))


if __name__ == "__main__":
    main()
