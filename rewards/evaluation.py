"""How much labelers agree with each other on the same pairs: the ceiling for a reward model."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np


def labeler_agreement(
    prompts: np.ndarray, chosen: np.ndarray, rejected: np.ndarray
) -> dict[str, Any]:
    """Over every two labelers who ordered the same pair of completions, the share who agree.

    Each comparison is one labeler's vote on an unordered pair {chosen, rejected}; a pair with
    a votes one way and b the other has C(a, 2) + C(b, 2) agreeing labeler pairs out of
    C(a + b, 2). Ties are not comparisons, so they are not counted here.
    """
    votes: Counter[tuple[int, int, int]] = Counter(
        zip(prompts.tolist(), chosen.tolist(), rejected.tolist(), strict=True)
    )
    agreeing = total = 0
    seen: set[tuple[int, int, int]] = set()
    for prompt, a, b in votes:
        key = (prompt, min(a, b), max(a, b))
        if key in seen:
            continue
        seen.add(key)
        forward, backward = votes[(prompt, a, b)], votes[(prompt, b, a)]
        agreeing += forward * (forward - 1) // 2 + backward * (backward - 1) // 2
        total += (forward + backward) * (forward + backward - 1) // 2
    return {"rate": agreeing / total if total else None, "labeler_pairs": total}
