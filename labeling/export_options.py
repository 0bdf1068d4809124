"""What a pair export may add and keep: the `include=` fields of a comparison's joined row (models,
ratings, flags, metadata, strength, agreement, predictions) and the deterministic train/test
`Split` by prompt."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import F

from labeling.criteria import with_every_criterion
from labeling.models import Rating

INCLUDES = ("models", "ratings", "flags", "metadata", "strength", "agreement", "predictions")
# A consensus pair is many labelers' verdict: one labeler's ratings, flags or strength do not
# belong to it, and its agreement is its vote share.
CONSENSUS_INCLUDES = ("models", "metadata", "agreement", "predictions")
# The columns each `include` name needs from a comparison's joined rows.
INCLUDE_COLUMNS = {
    "models": ("chosen__model_name", "rejected__model_name"),
    "ratings": ("ranking_id",),  # their rows looked up a chunk at a time (`chunk_ratings`)
    "flags": ("ranking__flags", "ranking__all_unacceptable"),
    "metadata": ("prompt__metadata",),
    "strength": ("strength",),
    "agreement": (),
    "predictions": (),  # looked up a chunk at a time (`predicted_rewards`)
}


@dataclass(frozen=True)
class Split:
    """A deterministic train/test split by prompt: `part` is "train" or "test"."""

    part: str
    test_share: float
    seed: int

    def keeps(self, prompt_external_id: str) -> bool:
        return in_test_part(self.seed, prompt_external_id, self.test_share) == (self.part == "test")


def in_test_part(seed: int, prompt_external_id: str, test_share: float) -> bool:
    """Whether a prompt is in the test part: the first 8 bytes of sha256("<seed>:<external
    id>"), read as a big-endian number over 2**64, fall under `test_share`. A hash of the
    prompt's own id, so every pair of a prompt lands in the same part, the parts of one seed
    and share are disjoint and cover everything, and any machine (or a user's script) gives the
    same split; the share is met on average, not exactly."""
    digest = hashlib.sha256(f"{seed}:{prompt_external_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < test_share * 2**64


RatingsByRanking = dict[int, dict[str, dict[str, int]]]


def chunk_ratings(include: tuple[str, ...], ranking_ids: Iterable[int]) -> RatingsByRanking:
    """The ratings of a chunk's rankings with `include=ratings` (one query), else none."""
    return Rating.objects.of_rankings(ranking_ids) if "ratings" in include else {}


Predicted = dict[int, tuple[float, dict[str, float]]]


def predicted_rewards(completion_ids: Iterable[int]) -> Predicted:
    """completion id -> (reward, per-criterion rewards) by the active reward model of its
    dataset (`rewards.services.predictions`), for those of `completion_ids` it scored. At most
    one active model covers a dataset (`activate_reward_model`), so each id has one row."""
    from rewards.models import Prediction  # rewards builds on labeling

    ids = list(set(completion_ids))
    if not ids:
        return {}
    rows = Prediction.objects.filter(
        completion_id__in=ids,
        reward_model__is_active=True,
        reward_model__datasets=F("completion__prompt__dataset"),
    ).values_list("completion_id", "reward", "criteria")
    return {completion_id: (reward, criteria) for completion_id, reward, criteria in rows}


def prediction_fields(
    predictions: Predicted, chosen_id: int, rejected_id: int, keys: list[str]
) -> dict[str, Any]:
    """`include=predictions`: each side's predicted reward and rewards on each of the dataset's
    criteria (`keys`), null where the model has not scored it (or has no head for a criterion),
    in one shape."""
    fields: dict[str, Any] = {}
    for side, completion_id in (("chosen", chosen_id), ("rejected", rejected_id)):
        reward, criteria = predictions.get(completion_id, (None, {}))
        fields[f"{side}_reward"] = reward
        fields[f"{side}_criterion_rewards"] = {c: criteria.get(c) for c in keys}
    return fields


def included_fields(
    include: tuple[str, ...],
    row: tuple[Any, ...],
    at: dict[str, int],
    shares: dict[tuple[int, int, int], tuple[float, int]] | None,
    predictions: Predicted | None = None,
    *,
    ratings: RatingsByRanking | None = None,
    keys: list[str] | None = None,
) -> dict[str, Any]:
    """The `include` fields of one comparison's joined row (`at`: column name -> index), with
    the ratings of its chunk's rankings (`chunk_ratings`) on the dataset's criteria (`keys`)."""
    keys = keys or []
    fields: dict[str, Any] = {}
    chosen_id, rejected_id = str(row[2]), str(row[3])
    if "models" in include:
        fields["chosen_model"] = row[at["chosen__model_name"]] or None
        fields["rejected_model"] = row[at["rejected__model_name"]] or None
    if "ratings" in include:
        given = (ratings or {}).get(row[at["ranking_id"]], {})
        fields["chosen_ratings"] = with_every_criterion(given.get(chosen_id), keys)
        fields["rejected_ratings"] = with_every_criterion(given.get(rejected_id), keys)
    if "flags" in include:
        flags = row[at["ranking__flags"]]
        fields["chosen_flags"] = flags.get(chosen_id, [])
        fields["rejected_flags"] = flags.get(rejected_id, [])
        fields["all_unacceptable"] = row[at["ranking__all_unacceptable"]]
    if "metadata" in include:
        fields["prompt_metadata"] = row[at["prompt__metadata"]]
    if "strength" in include:
        fields["strength"] = row[at["strength"]] or None
    if "agreement" in include and shares is not None:
        fields["agreement"], fields["voters"] = shares[row[1:4]]
    if predictions is not None:
        fields |= prediction_fields(predictions, row[2], row[3], keys)
    return fields
