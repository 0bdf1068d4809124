"""How much labelers agree with each other on the same pairs: the ceiling for a reward model."""

from __future__ import annotations

from typing import Any

import numpy as np


def labeler_agreement(
    prompts: np.ndarray, chosen: np.ndarray, rejected: np.ndarray
) -> dict[str, Any]:
    """Over every two labelers who ordered the same pair of completions, the share who agree.

    Each comparison is one labeler's vote on an unordered pair {chosen, rejected}; a pair with
    a votes one way and b the other has C(a, 2) + C(b, 2) agreeing labeler pairs out of
    C(a + b, 2). Ties are not comparisons, so they are not counted here. Completions may be given
    by id or by any other number that tells them apart (the training data's int32 row numbers),
    prompts likewise. Array operations only (a Counter of tuples took ~300 bytes a comparison):
    with int32 inputs, a sort order (8 bytes a comparison) and sorted int32 copies (12), then a
    few bytes a comparison and a few numbers per distinct pair.
    """
    if len(prompts) == 0:
        return {"rate": None, "labeler_pairs": 0}
    # Sort the votes by (prompt, lower, higher completion): each run of equal keys is one pair.
    order = np.lexsort((np.maximum(chosen, rejected), np.minimum(chosen, rejected), prompts))
    prompts, chosen, rejected = prompts[order], chosen[order], rejected[order]
    del order
    low, high = np.minimum(chosen, rejected), np.maximum(chosen, rejected)
    lower_won = chosen == low
    del chosen, rejected
    new = prompts[1:] != prompts[:-1]
    new |= low[1:] != low[:-1]
    new |= high[1:] != high[:-1]
    starts = np.flatnonzero(np.concatenate([[True], new]))
    votes = np.diff(np.append(starts, len(prompts)))
    forward = np.add.reduceat(lower_won, starts, dtype=np.int64)
    backward = votes - forward
    agreeing = int((forward * (forward - 1) // 2 + backward * (backward - 1) // 2).sum())
    total = int((votes * (votes - 1) // 2).sum())
    return {"rate": agreeing / total if total else None, "labeler_pairs": total}
