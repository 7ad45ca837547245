"""A word-level Markov chain: the smallest real language model. It learns which word follows
each `order`-word context in a corpus (train.py) and generates by sampling that table.
Pure Python: the Serve deployment in app.py wraps it."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

CODE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class MarkovModel:
    order: int
    table: dict[str, dict[str, int]]  # " ".join(context) -> {next word: count}

    @classmethod
    def train(cls, text: str, order: int) -> "MarkovModel":
        words = text.split()
        table: dict[str, dict[str, int]] = {}
        for i in range(len(words) - order):
            context = " ".join(words[i:i + order])
            following = table.setdefault(context, {})
            following[words[i + order]] = following.get(words[i + order], 0) + 1
        return cls(order, table)

    @classmethod
    def load(cls, path: str | Path) -> "MarkovModel":
        path = Path(path)
        if not path.is_absolute():  # relative to the code dir, which ships with the model
            path = CODE_DIR / path
        data = json.loads(path.read_text())
        return cls(int(data["order"]), data["table"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"order": self.order, "table": self.table}, sort_keys=True))

    def generate(self, prompt: str, max_tokens: int, rng: random.Random):
        """Yield up to `max_tokens` words continuing `prompt` (a random start if unknown)."""
        words = prompt.split()
        context = words[-self.order:] if len(words) >= self.order else []
        if " ".join(context) not in self.table:
            context = rng.choice(sorted(self.table)).split()
        for _ in range(max_tokens):
            following = self.table.get(" ".join(context))
            if not following:
                context = rng.choice(sorted(self.table)).split()
                following = self.table[" ".join(context)]
            choices = sorted(following)
            word = rng.choices(choices, weights=[following[w] for w in choices])[0]
            yield word
            context = (context + [word])[-self.order:]
