"""Regenerate the shipped models: `python examples/textgen/train.py`.

v1 is a bigram chain (each word from the one before), v2 a trigram chain (from the two
before), both trained on corpus.txt, so they write visibly different text.
"""

from __future__ import annotations

from markov import CODE_DIR, MarkovModel

VERSIONS = {"v1": 1, "v2": 2}  # version: order


def main() -> None:
    text = (CODE_DIR / "corpus.txt").read_text()
    (CODE_DIR / "models").mkdir(exist_ok=True)
    for version, order in VERSIONS.items():
        model = MarkovModel.train(text, order)
        model.save(CODE_DIR / "models" / f"{version}.json")
        print(version, f"order {order}, {len(model.table)} contexts")


if __name__ == "__main__":
    main()
