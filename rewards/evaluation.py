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
    C(a + b, 2). Ties are not comparisons, so they are not counted here. Array operations only:
    memory stays a few numbers per comparison (a Counter of tuples took ~300 bytes each).
    """
    if len(prompts) == 0:
        return {"rate": None, "labeler_pairs": 0}
    # Sort the votes by (prompt, lower id, higher id): each run of equal keys is one pair.
    low, high = np.minimum(chosen, rejected), np.maximum(chosen, rejected)
    order = np.lexsort((high, low, prompts))
    prompts, low, high = prompts[order], low[order], high[order]
    lower_won = (chosen[order] == low).astype(np.int64)
    new = (prompts[1:] != prompts[:-1]) | (low[1:] != low[:-1]) | (high[1:] != high[:-1])
    starts = np.flatnonzero(np.concatenate([[True], new]))
    votes = np.diff(np.append(starts, len(prompts)))
    forward = np.add.reduceat(lower_won, starts)
    backward = votes - forward
    agreeing = int((forward * (forward - 1) // 2 + backward * (backward - 1) // 2).sum())
    total = int((votes * (votes - 1) // 2).sum())
    return {"rate": agreeing / total if total else None, "labeler_pairs": total}
