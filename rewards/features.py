"""Features of a (conversation, completion) pair for a linear reward model. Needs only numpy,
scipy and scikit-learn: this file ships beside every exported model as `featurizer.py`."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.utils import murmurhash3_32

Message = dict[str, str]
TOKEN = re.compile(r"[a-z0-9']+")
MARKERS = {
    "refusal": (
        "i can't",
        "i cannot",
        "i won't",
        "i will not",
        "i'm not able",
        "i am not able",
        "not appropriate",
        "i'm sorry",
        "i am sorry",
        "can't help",
        "cannot help",
        "illegal",
        "not comfortable",
        "i don't think",
        "i do not think",
    ),
    "hedge": ("maybe", "perhaps", "might", "not sure", "i think", "it depends", "possibly"),
    "question": ("?",),
}
DENSE = ("bias_length", "log_chars", "log_words", "newlines", *(f"marker_{m}" for m in MARKERS))


@dataclass(frozen=True)
class FeatureConfig:
    hash_bits: int = 18
    completion_ngrams: int = 2
    crosses: bool = True

    @property
    def n_features(self) -> int:
        return (1 << self.hash_bits) + len(DENSE)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown feature options {sorted(unknown)}; use {sorted(known)}")
        return cls(**data)


def describe(config: FeatureConfig) -> dict[str, Any]:
    return {
        "config": config.to_dict(),
        "token_regex": TOKEN.pattern,
        "markers": MARKERS,
        "dense_columns": DENSE,
        "hashing": "murmurhash3_32(token, seed=0, positive=True) % 2**hash_bits",
        "n_features": config.n_features,
    }


def _markers(text: str) -> dict[str, int]:
    lower = text.lower()
    return {name: sum(lower.count(p) for p in phrases) for name, phrases in MARKERS.items()}


def _tokens(
    text: str, config: FeatureConfig, prompt_words: set[str], present: dict[str, int]
) -> list[str]:
    words = TOKEN.findall(text.lower())
    out = [f"c:{w}" for w in words]
    for n in range(2, config.completion_ngrams + 1):
        out += ["c:" + " ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    if config.crosses:
        for name, count in present.items():
            if count:
                out += [f"x:{w}|{name}" for w in prompt_words]
    return out


def featurize(
    items: Sequence[tuple[list[Message], str]], config: FeatureConfig
) -> sparse.csr_matrix:
    size = 1 << config.hash_bits
    indptr, indices, data = [0], [], []
    for messages, completion in items:
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        prompt_words = set(TOKEN.findall(last_user.lower()))
        present = _markers(completion)
        counts: dict[int, float] = {}
        for token in _tokens(completion, config, prompt_words, present):
            column = murmurhash3_32(token, seed=0, positive=True) % size
            counts[column] = counts.get(column, 0.0) + 1.0
        norm = math.sqrt(sum(v * v for v in counts.values())) or 1.0
        for column, value in counts.items():
            indices.append(column)
            data.append(value / norm)
        chars, words = len(completion), len(completion.split())
        dense = [
            1.0 if chars else 0.0,
            math.log1p(chars),
            math.log1p(words),
            math.log1p(completion.count("\n")),
        ]
        dense += [math.log1p(present[name]) for name in MARKERS]
        for offset, value in enumerate(dense):
            if value:
                indices.append(size + offset)
                data.append(value)
        indptr.append(len(indices))
    return sparse.csr_matrix(
        (np.array(data), np.array(indices, dtype=np.int64), np.array(indptr)),
        shape=(len(items), config.n_features),
    )
