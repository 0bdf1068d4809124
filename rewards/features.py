"""Features of a (conversation, completion) pair for a linear Bradley-Terry reward model.

Needs only the standard library, numpy, scipy and scikit-learn: this file ships beside every
exported model as `featurizer.py`, and `describe(config)` spells out everything it does so it can
be written again elsewhere.

A row has `config.n_features` columns:

- columns `0 .. len(HANDCRAFTED) - 1` hold the handcrafted features of `HANDCRAFTED`, in that
  order, each multiplied by `config.handcrafted_weight`;
- the other `n_features - len(HANDCRAFTED)` columns are a hashing space shared by three blocks of
  named features: word n-grams of the completion (`w:`), character n-grams inside its words
  (`c:`) and crosses of the last user message's words with what the completion does (`x:`).
  A name goes to column `len(HANDCRAFTED) + abs(h) % (n_features - len(HANDCRAFTED))` where `h`
  is the signed 32-bit MurmurHash3 (x86, seed 0) of its UTF-8 bytes, exactly as scikit-learn's
  `FeatureHasher(alternate_sign=False)` does. Within a block, repeated names add up, each count
  becomes `log(1 + count)`, the block's part of the row is scaled to unit Euclidean length and
  then multiplied by the block's weight; blocks that land on the same column add up.

Rows are float32, the type the exported ONNX model takes. The defaults (character trigrams at
weight 1, word unigrams 0.5, crosses 0.5, handcrafted 0.3) were chosen by prompt-grouped
cross-validation on real human preferences (`bench/reward_quality.py`); n-grams of other lengths,
word bigrams and other weights did no better there.

Text is lowercased and curly quotes are made straight before anything else. Only the
completion and the last user message are read: a linear reward compares completions of the same
conversation, so features of the conversation alone would cancel out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from itertools import chain
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction import FeatureHasher

Message = dict[str, str]

TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*|[?!]")
SENTENCE_END = re.compile(r"[.!?]+")
QUOTES = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}
FINISHED_ENDINGS = ".!?\"')"
# Values in [0, 1] (shares of the words) are multiplied by this so that they vary about as much
# as the log-counts beside them and one regularization strength suits both.
SHARE_SCALE = 10.0

# Phrases are matched on whole tokens: " " + " ".join(tokens) + " " contains " " + phrase + " ".
PHRASES: dict[str, tuple[str, ...]] = {
    "refusal": (
        "i'm sorry",
        "i am sorry",
        "i can't",
        "i cannot",
        "i won't",
        "i will not",
        "i'm not able",
        "i am not able",
        "i'm not going to",
        "i am not going to",
        "i don't want to",
        "i'd rather not",
        "i would rather not",
        "i'm not comfortable",
        "not appropriate",
        "can't help",
        "cannot help",
        "not something i",
        "i don't think i",
    ),
    "hedge": (
        "i'm not sure",
        "i am not sure",
        "i don't know",
        "not sure",
        "maybe",
        "perhaps",
        "might",
        "possibly",
        "probably",
        "i think",
        "i guess",
        "it depends",
    ),
    "apology": ("sorry", "apologize", "apologies"),
    "clarify": (
        "what do you mean",
        "do you mean",
        "can you tell me more",
        "could you explain",
        "can you explain",
        "i don't understand",
        "i'm not sure what",
        "why do you",
        "what are you",
        "what kind of",
        "what is it",
    ),
    "agree": (
        "that's a great",
        "good idea",
        "great idea",
        "i agree",
        "you're right",
        "that sounds",
        "sure",
        "of course",
        "yes",
    ),
    "suggest": (
        "you could",
        "you can",
        "you might",
        "you should",
        "try to",
        "i recommend",
        "i suggest",
        "here are",
        "here's",
    ),
}

# Word lists: each gives two features, log(1 + count) and the share of the completion's words.
LEXICONS: dict[str, tuple[str, ...]] = {
    "first_person": ("i", "i'm", "i'd", "i've", "i'll", "me", "my", "myself"),
    "second_person": ("you", "you're", "your", "you'd", "you'll", "you've", "yourself"),
    "first_plural": ("we", "we're", "us", "our"),
    "negation": (
        "not",
        "no",
        "never",
        "don't",
        "can't",
        "won't",
        "cannot",
        "shouldn't",
        "wouldn't",
        "isn't",
        "aren't",
        "doesn't",
    ),
    "harm": (
        "kill",
        "killing",
        "murder",
        "steal",
        "stealing",
        "rob",
        "robbery",
        "drug",
        "drugs",
        "cocaine",
        "meth",
        "heroin",
        "weapon",
        "weapons",
        "gun",
        "guns",
        "bomb",
        "poison",
        "hurt",
        "attack",
        "punch",
        "hit",
        "rape",
        "sex",
        "porn",
        "naked",
        "racist",
        "cheat",
        "hack",
        "fraud",
        "crime",
        "criminal",
        "violence",
        "violent",
        "shoot",
        "shot",
        "knife",
        "blood",
        "die",
        "death",
        "dead",
        "fight",
        "abuse",
        "torture",
        "weed",
        "marijuana",
        "alcohol",
        "drunk",
    ),
    "profanity": (
        "fuck",
        "fucking",
        "shit",
        "bitch",
        "damn",
        "ass",
        "asshole",
        "crap",
        "bastard",
        "dick",
        "pussy",
        "cunt",
        "hell",
        "stupid",
        "idiot",
        "dumb",
        "moron",
        "retard",
    ),
    "negative_emotion": (
        "hate",
        "angry",
        "upset",
        "sad",
        "terrible",
        "awful",
        "horrible",
        "bad",
        "worst",
        "disgusting",
    ),
    "moral": (
        "wrong",
        "illegal",
        "unethical",
        "harmful",
        "dangerous",
        "inappropriate",
        "safe",
        "safety",
        "respect",
        "kind",
        "legal",
        "law",
        "police",
        "consent",
        "hurtful",
        "offensive",
    ),
    "support": (
        "help",
        "support",
        "talk",
        "therapist",
        "counselor",
        "professional",
        "resources",
        "hotline",
        "doctor",
    ),
    "comply": (
        "here's",
        "here",
        "sure",
        "yes",
        "okay",
        "ok",
        "definitely",
        "absolutely",
        "course",
        "step",
        "steps",
        "first",
        "then",
        "next",
        "try",
        "could",
        "can",
    ),
    "deflect": ("understand", "mean", "sorry", "unsure", "clarify", "why", "explain"),
}
FIRST_WORDS: dict[str, tuple[str, ...]] = {
    "starts_first_person": ("i", "i'm", "i'd", "i've", "i'll", "my", "me"),
    "starts_question_word": (
        "what",
        "why",
        "how",
        "who",
        "which",
        "when",
        "where",
        "do",
        "does",
        "are",
        "is",
        "can",
        "could",
        "would",
    ),
}

SHAPE = (
    "log_chars",
    "log_words",
    "log_sentences",
    "question_marks",
    "ends_with_question",
    "only_questions",
    "exclamations",
    "line_breaks",
    "unfinished",
    "empty",
    "quotes",
    "numbers",
    "uppercase_share",
    "prompt_overlap_share",
)
HANDCRAFTED: tuple[str, ...] = (
    *SHAPE,
    *FIRST_WORDS,
    *(f"phrases_{name}" for name in PHRASES),
    *(f"words_{name}" for name in LEXICONS),
    *(f"words_{name}_share" for name in LEXICONS),
)
# The completion markers crossed with the last user message's words, besides its length bucket.
CROSS_MARKERS = ("refusal", "hedge", "apology", "clarify", "agree", "suggest", "question")


@dataclass(frozen=True)
class FeatureConfig:
    """What the featurizer computes; every field is JSON-friendly (ranges become lists)."""

    n_features: int = 2**18
    word_ngram_range: tuple[int, int] = (1, 1)
    word_weight: float = 0.5
    char_ngram_range: tuple[int, int] = (3, 3)
    char_weight: float = 1.0
    cross_weight: float = 0.5
    handcrafted_weight: float = 0.3

    def __post_init__(self) -> None:
        if type(self.n_features) is not int or self.n_features <= len(HANDCRAFTED):
            raise ValueError(f"n_features must be a whole number above {len(HANDCRAFTED)}")
        for name in ("word_ngram_range", "char_ngram_range"):
            value = getattr(self, name)
            if isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, name, value)
            if (
                not isinstance(value, tuple)
                or len(value) != 2
                or not all(type(v) is int for v in value)
                or not 1 <= value[0] <= value[1]
            ):
                raise ValueError(f"{name} must be two whole numbers [low, high], 1 <= low <= high")
        for name in ("word_weight", "char_weight", "cross_weight", "handcrafted_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            if not 0 <= value < math.inf:
                raise ValueError(f"{name} must be 0 (off) or more")
            object.__setattr__(self, name, float(value))

    @property
    def n_hashed(self) -> int:
        return self.n_features - len(HANDCRAFTED)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("word_ngram_range", "char_ngram_range"):
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown feature options {sorted(unknown)}; use {sorted(known)}")
        return cls(**data)


def describe(config: FeatureConfig) -> dict[str, Any]:
    """Everything needed to compute the same rows without this module, as plain JSON."""
    offset = len(HANDCRAFTED)
    return {
        "config": config.to_dict(),
        "n_features": config.n_features,
        "dtype": "float32",
        "normalize": "lowercase, then replace " + " ".join(f"{k}->{v}" for k, v in QUOTES.items()),
        "token_regex": TOKEN.pattern,
        "prompt": "the content of the last message whose role is 'user' ('' when there is none)",
        "handcrafted": {
            "columns": f"0..{offset - 1}, in the order of 'names'",
            "names": list(HANDCRAFTED),
            "scale": "each value multiplied by config.handcrafted_weight",
            "definitions": _handcrafted_definitions(),
            "phrases": {name: list(phrases) for name, phrases in PHRASES.items()},
            "phrase_matching": "count of ' ' + phrase + ' ' in ' ' + ' '.join(tokens) + ' '",
            "lexicons": {name: list(words) for name, words in LEXICONS.items()},
            "first_words": {name: list(words) for name, words in FIRST_WORDS.items()},
            "share_scale": SHARE_SCALE,
            "finished_endings": FINISHED_ENDINGS,
        },
        "hashed": {
            "columns": f"{offset}..{config.n_features - 1}",
            "column": (
                f"{offset} + abs(murmurhash3_x86_32(utf8(name), seed=0) as int32) % "
                f"{config.n_hashed} (sklearn FeatureHasher, alternate_sign=False)"
            ),
            "value": (
                "per block: sum duplicates, count -> log(1 + count), scale the block's part of "
                "the row to unit L2 norm, multiply by the block weight; blocks add up"
            ),
            "blocks": {
                "words": {
                    "weight": config.word_weight,
                    "names": "'w:' + ' '.join(tokens[i:i+n]) for n in word_ngram_range",
                    "ngram_range": list(config.word_ngram_range),
                },
                "chars": {
                    "weight": config.char_weight,
                    "names": (
                        "'c:' + g for every n-gram g (n in char_ngram_range) of ' ' + token + ' ' "
                        "for each word token (not '?' or '!')"
                    ),
                    "ngram_range": list(config.char_ngram_range),
                },
                "crosses": {
                    "weight": config.cross_weight,
                    "names": (
                        "'x:' + p + '|' + m for each distinct word token p of the prompt and "
                        "each marker m the completion shows: one of 'markers' when its phrase "
                        "count is above 0 ('question': it has a '?'), and always "
                        "'len' + str(min(8, floor(log2(1 + words))))"
                    ),
                    "markers": list(CROSS_MARKERS),
                },
            },
        },
    }


def _handcrafted_definitions() -> dict[str, str]:
    definitions = {
        "log_chars": "log(1 + characters of the raw completion)",
        "log_words": "log(1 + word tokens), word tokens being tokens other than '?' and '!'",
        "log_sentences": "log(1 + matches of [.!?]+)",
        "question_marks": "log(1 + count of '?')",
        "ends_with_question": "1 if the stripped text ends with '?' else 0",
        "only_questions": "1 if the stripped text ends with '?' and has no '.' else 0",
        "exclamations": "log(1 + count of '!')",
        "line_breaks": "log(1 + count of newline characters)",
        "unfinished": "1 if the stripped text is not empty and ends with none of finished_endings",
        "empty": "1 if there is no word token else 0",
        "quotes": "log(1 + count of '\"')",
        "numbers": "log(1 + word tokens made of digits only)",
        "uppercase_share": "share_scale * uppercase letters / letters of the raw completion",
        "prompt_overlap_share": (
            "share_scale * share of the distinct word tokens that also occur in the prompt"
        ),
    }
    for name in FIRST_WORDS:
        definitions[name] = f"1 if the first token is in first_words['{name}'] else 0"
    for name in PHRASES:
        definitions[f"phrases_{name}"] = f"log(1 + matches of the phrases['{name}'])"
    for name in LEXICONS:
        definitions[f"words_{name}"] = f"log(1 + word tokens in lexicons['{name}'])"
        definitions[f"words_{name}_share"] = (
            f"share_scale * word tokens in lexicons['{name}'] / max(1, word tokens)"
        )
    return definitions


def normalize(text: str) -> str:
    text = text.lower()
    for curly, straight in QUOTES.items():
        text = text.replace(curly, straight)
    return text


def last_user_message(messages: Sequence[Message]) -> str:
    return next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")


def phrase_counts(tokens: Sequence[str]) -> dict[str, int]:
    counts = dict.fromkeys(PHRASES, 0)
    joined = " " + " ".join(tokens) + " "
    # Tokens hold no spaces, so " phrase " only matches whole tokens from the phrase's first
    # word on: phrases whose first word is not a token cannot match and are not searched for.
    for first in _PHRASES_BY_FIRST_WORD.keys() & set(tokens):
        for name, padded in _PHRASES_BY_FIRST_WORD[first]:
            counts[name] += joined.count(padded)
    return counts


def _phrases_by_first_word() -> dict[str, list[tuple[str, str]]]:
    """first word -> (PHRASES key, " " + phrase + " ") of every phrase starting with it."""
    index: dict[str, list[tuple[str, str]]] = {}
    for name, phrases in PHRASES.items():
        for phrase in phrases:
            index.setdefault(phrase.split(" ")[0], []).append((name, f" {phrase} "))
    return index


_PHRASES_BY_FIRST_WORD = _phrases_by_first_word()


def handcrafted(completion: str, tokens: Sequence[str], prompt_words: set[str]) -> list[float]:
    """The values of HANDCRAFTED for one completion, before `handcrafted_weight`."""
    text = normalize(completion).strip()
    words = [t for t in tokens if t not in ("?", "!")]
    letters = list(filter(str.isalpha, completion))
    distinct = set(words)
    shape = {
        "log_chars": math.log1p(len(completion)),
        "log_words": math.log1p(len(words)),
        "log_sentences": math.log1p(len(SENTENCE_END.findall(text))),
        "question_marks": math.log1p(text.count("?")),
        "ends_with_question": float(text.endswith("?")),
        "only_questions": float(text.endswith("?") and "." not in text),
        "exclamations": math.log1p(text.count("!")),
        "line_breaks": math.log1p(text.count("\n")),
        "unfinished": float(bool(text) and not text.endswith(tuple(FINISHED_ENDINGS))),
        "empty": float(not words),
        "quotes": math.log1p(text.count('"')),
        "numbers": math.log1p(sum(map(str.isdigit, words))),
        "uppercase_share": SHARE_SCALE * sum(map(str.isupper, letters)) / max(1, len(letters)),
        "prompt_overlap_share": SHARE_SCALE * len(distinct & prompt_words) / max(1, len(distinct)),
    }
    values = [shape[name] for name in SHAPE]
    first = tokens[0] if tokens else ""
    values += [float(first in starts) for starts in FIRST_WORDS.values()]
    values += [math.log1p(count) for count in phrase_counts(tokens).values()]
    counts = [0] * len(LEXICONS)
    for word in filter(_LEXICONS_OF.__contains__, words):
        for lexicon in _LEXICONS_OF[word]:
            counts[lexicon] += 1
    values += [math.log1p(count) for count in counts]
    values += [SHARE_SCALE * count / max(1, len(words)) for count in counts]
    return values


# word -> the positions in LEXICONS of the word lists holding it
_LEXICONS_OF: dict[str, tuple[int, ...]] = {
    word: tuple(i for i, words in enumerate(LEXICONS.values()) if word in words)
    for word in {w for words in LEXICONS.values() for w in words}
}


def word_ngrams(tokens: Sequence[str], low: int, high: int) -> list[str]:
    return [
        "w:" + " ".join(tokens[i : i + n])
        for n in range(low, high + 1)
        for i in range(len(tokens) - n + 1)
    ]


def char_ngrams(tokens: Sequence[str], low: int, high: int) -> list[str]:
    grams = []
    for token in tokens:
        if token in ("?", "!"):
            continue
        padded = f" {token} "
        for n in range(low, high + 1):
            grams += ["c:" + padded[i : i + n] for i in range(len(padded) - n + 1)]
    return grams


def crosses(tokens: Sequence[str], prompt_words: set[str]) -> list[str]:
    counts = phrase_counts(tokens)
    words = sum(t not in ("?", "!") for t in tokens)
    markers = [m for m in CROSS_MARKERS if m != "question" and counts[m] > 0]
    if "?" in tokens:
        markers.append("question")
    markers.append(f"len{min(8, int(math.log2(1 + words)))}")
    return [f"x:{p}|{m}" for p in sorted(prompt_words) for m in markers]


def _hasher(config: FeatureConfig) -> FeatureHasher:
    return FeatureHasher(
        n_features=config.n_hashed, input_type="string", alternate_sign=False, dtype=np.float64
    )


def _scaled_block(counts: Any, weight: float) -> Any:
    """Counts (duplicates summed) -> log(1 + count), each row at unit length, times `weight`."""
    block = sparse.csr_matrix(counts)
    block.sort_indices()
    block.data = np.log1p(block.data)
    squares = sparse.csr_matrix((block.data * block.data, block.indices, block.indptr), block.shape)
    lengths = np.sqrt(squares @ np.ones(block.shape[1]))
    scale = np.divide(weight, lengths, out=np.zeros_like(lengths), where=lengths > 0)
    block.data *= np.repeat(scale, np.diff(block.indptr))
    return block


def _hashed_block(names: Iterable[list[str]], config: FeatureConfig, weight: float) -> Any:
    return _scaled_block(_hasher(config).transform(names), weight)


def _word_counts(tokens: Sequence[list[str]]) -> tuple[list[str], Any]:
    """The distinct tokens and a (rows x distinct tokens) matrix of how often each occurs."""
    vocabulary: dict[str, int] = {}
    columns = [[vocabulary.setdefault(t, len(vocabulary)) for t in row] for row in tokens]
    indptr = np.cumsum([0] + [len(c) for c in columns])
    counts = sparse.csr_matrix(
        (np.ones(indptr[-1]), np.fromiter(chain.from_iterable(columns), np.int64), indptr),
        shape=(len(tokens), len(vocabulary)),
    )
    counts.sum_duplicates()
    return list(vocabulary), counts


def _per_word_names(
    vocabulary: list[str], counts: Any, names_of: Callable[[str], list[str]], config: FeatureConfig
) -> Any:
    """Hashed counts of the names each token makes (`names_of(token)`), summed over each row's
    tokens, hashing every distinct token once rather than every occurrence: the same counts (whole
    numbers, so the sums are exact) as hashing the names of all the tokens, several times faster
    because words repeat."""
    if not vocabulary:
        return sparse.csr_matrix((counts.shape[0], config.n_hashed), dtype=np.float64)
    return counts @ _hasher(config).transform(names_of(word) for word in vocabulary)


def _word_block(
    vocabulary: list[str], counts: Any, tokens: Sequence[list[str]], config: FeatureConfig
) -> Any:
    """The `w:` block: `_hashed_block` of `word_ngrams`, unigrams hashed once per distinct word."""
    low, high = config.word_ngram_range
    block = sparse.csr_matrix((len(tokens), config.n_hashed), dtype=np.float64)
    if low == 1:
        block = block + _per_word_names(vocabulary, counts, lambda word: ["w:" + word], config)
    if high >= 2:
        block = block + _hasher(config).transform(word_ngrams(t, max(2, low), high) for t in tokens)
    return _scaled_block(block, config.word_weight)


def _char_block(vocabulary: list[str], counts: Any, config: FeatureConfig) -> Any:
    """The `c:` block: `_hashed_block` of `char_ngrams`, hashed once per distinct word."""
    low, high = config.char_ngram_range
    grams = _per_word_names(vocabulary, counts, lambda w: char_ngrams([w], low, high), config)
    return _scaled_block(grams, config.char_weight)


def featurize(
    items: Sequence[tuple[list[Message], str]], config: FeatureConfig
) -> sparse.csr_matrix:
    """One float32 row per (conversation, completion), shape (len(items), config.n_features)."""
    tokens = [TOKEN.findall(normalize(completion)) for _, completion in items]
    prompts = [
        {t for t in TOKEN.findall(normalize(last_user_message(messages))) if t not in ("?", "!")}
        for messages, _ in items
    ]
    hashed = sparse.csr_matrix((len(items), config.n_hashed), dtype=np.float64)
    if items:
        vocabulary, counts = _word_counts(tokens)
        if config.word_weight:
            hashed = hashed + _word_block(vocabulary, counts, tokens, config)
        if config.char_weight:
            hashed = hashed + _char_block(vocabulary, counts, config)
        if config.cross_weight:
            names = (crosses(t, p) for t, p in zip(tokens, prompts, strict=True))
            hashed = hashed + _hashed_block(names, config, config.cross_weight)
    dense = np.array(
        [
            handcrafted(completion, t, p)
            for (_, completion), t, p in zip(items, tokens, prompts, strict=True)
        ],
        dtype=np.float64,
    ).reshape(len(items), len(HANDCRAFTED))
    dense *= config.handcrafted_weight
    matrix = sparse.hstack([sparse.csr_matrix(dense), hashed], format="csr", dtype=np.float32)
    matrix.eliminate_zeros()
    return matrix


# Items featurized at once by `score`: featurizing needs ~8x its result's memory for a moment,
# ~20 MB for 1,000 completions, so a long list is scored in chunks of this many.
SCORE_CHUNK_SIZE = 1_000


def load_weights(path: str) -> np.ndarray:
    """The `weights.npy` shipped beside `model.onnx` (float64, read without pickle): shape
    (n_features,) for a model with the overall head only, (1 + heads, n_features) for one with
    per-criterion heads: row 0 is the overall head, then the heads in the card's "heads" order."""
    weights: np.ndarray = np.load(path, allow_pickle=False)
    return weights


def rewards(matrix: sparse.csr_matrix, weights: np.ndarray) -> np.ndarray:
    """`matrix @ weights.T` in float64 without making the matrix dense: one reward per row for
    weights of shape (n_features,), one column per head for (heads, n_features)."""
    return np.asarray(matrix @ np.asarray(weights, dtype=np.float64).T, dtype=np.float64)


def score(
    items: Sequence[tuple[list[Message], str]], config: FeatureConfig, weights: np.ndarray
) -> np.ndarray:
    """The rewards of (conversation, completion) items, the sparse way: featurized and
    multiplied `SCORE_CHUNK_SIZE` items at a time, so memory is the sparse rows of one chunk
    (about 5 KB an item) and the result, where the ONNX model's dense input costs 1 MiB an
    item (2**18 float32 columns). Shape as `rewards`: (items,) or (items, heads)."""
    weights = np.asarray(weights, dtype=np.float64)
    result = np.zeros((len(items), *weights.shape[:-1]))
    for start in range(0, len(items), SCORE_CHUNK_SIZE):
        chunk = items[start : start + SCORE_CHUNK_SIZE]
        result[start : start + len(chunk)] = rewards(featurize(chunk, config), weights)
    return result
