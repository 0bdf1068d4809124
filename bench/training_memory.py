"""Memory per comparison of the reward model's per-pair work, on 1M pairs in this process.

The loss and gradient, the fit, the metrics and the labelers' agreement on comparisons each
allocate what their docstrings say: a few bytes a pair on top of the inputs (numpy reports its
buffers to tracemalloc). Prints each figure beside its budget; exits 1 if one is over. Run from
the repo root:

    .venv/bin/python bench/training_memory.py [--pairs N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tracemalloc
from collections.abc import Callable
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy import sparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Bytes a pair each may allocate at its peak, besides its inputs. The loss: one float64 a pair
# (the losses) and a few blocks of temporaries (before blocks: 24, and 48 in the fit). The
# metrics: a float64 and four bytes a pair, and one bin's predictions (it was 96). Agreement:
# the sort order (8 bytes) and sorted int32 copies (12) (it was 72 on int64 ids).
BUDGETS = {"loss and gradient": 12, "fit": 12, "metrics": 24, "agreement on comparisons": 26}


def problem(
    pairs: int, rows: int = 2000, columns: int = 50
) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
    """A float32 matrix (as featurize makes) and int32 pairs of distinct rows."""
    rng = np.random.default_rng(0)
    matrix = sparse.random(
        rows, columns, density=0.3, format="csr", dtype=np.float32, random_state=1
    )
    chosen = rng.integers(0, rows, pairs)
    rejected = (chosen + rng.integers(1, rows, pairs)) % rows
    return matrix, chosen.astype(np.int32), rejected.astype(np.int32)


def allocated_per_pair(function: Callable[[], object], pairs: int) -> float:
    """The peak of the memory `function` allocates, in bytes per pair."""
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1] / pairs
    finally:
        tracemalloc.stop()


def measure(pairs: int) -> dict[str, float]:
    from labeling.quality import comparison_agreement
    from rewards import fitting

    matrix, chosen, rejected = problem(pairs)
    weights = np.zeros(matrix.shape[1])
    differences = np.random.default_rng(3).normal(size=pairs)
    margins = np.ones(pairs, dtype=np.int16)
    # The shape of bench/reward_scale.py's same-completions run: 4 completions a prompt, ~30
    # votes on each of its 6 pairs.
    rng = np.random.default_rng(5)
    prompts = rng.integers(0, 5556, pairs).astype(np.int32)
    first, second = np.array(list(combinations(range(4), 2)))[rng.integers(0, 6, pairs)].T
    voted_chosen = (4 * prompts + first).astype(np.int32)
    voted_rejected = (4 * prompts + second).astype(np.int32)
    return {
        "loss and gradient": allocated_per_pair(
            lambda: fitting.loss_and_gradient(weights, matrix, chosen, rejected, 0.1), pairs
        ),
        "fit": allocated_per_pair(
            lambda: fitting.fit_bradley_terry(
                matrix, chosen, rejected, fitting.FitConfig(max_iter=2)
            ),
            pairs,
        ),
        "metrics": allocated_per_pair(
            lambda: fitting.difference_metrics(differences, margins), pairs
        ),
        "agreement on comparisons": allocated_per_pair(
            lambda: comparison_agreement(prompts, voted_chosen, voted_rejected), pairs
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    args = parser.parse_args()
    import django

    django.setup()
    figures = measure(args.pairs)
    over = False
    print(f"peak bytes allocated per pair, {args.pairs:,} pairs")
    for name, value in figures.items():
        budget = BUDGETS[name]
        over |= value >= budget
        print(
            f"  {name:<26} {value:6.1f}  (budget < {budget}){'  OVER' if value >= budget else ''}"
        )
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
