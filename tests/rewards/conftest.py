from __future__ import annotations

import uuid
from typing import Any

import pytest

from labeling.models import Completion, Dataset, Prompt
from labeling.services import leasing, rankings
from rewards.models import TrainingRun
from rewards.services import runs
from tests.factories import DatasetFactory, UserFactory

GOOD = "Happy to help: here is a careful, detailed and polite answer with steps."
BAD = "No. Figure it out yourself, idiot."


def ranked_dataset(prompts: int = 30, labelers: int = 2, slug: str = "rm-data") -> Dataset:
    """Prompts with a polite and a rude completion (plus a neutral one on every third prompt),
    ranked by `labelers` labelers who prefer polite > neutral > rude, except the last labeler
    who flips every fifth prompt, so agreement is below 1."""
    dataset = DatasetFactory(slug=slug, labels_per_prompt=labelers, criteria=[])
    for index in range(prompts):
        prompt = Prompt.objects.create(
            dataset=dataset,
            external_id=f"q{index}",
            content_hash=f"{index:064d}",
            messages=[
                {"role": "user", "content": f"Question number {index} about topic {index % 7}?"}
            ],
        )
        texts = [f"{GOOD} ({index})", f"{BAD} ({index})"]
        if index % 3 == 0:
            texts.append(f"Maybe, it depends on topic {index % 7}.")
        for position, text in enumerate(texts):
            Completion.objects.create(
                prompt=prompt, external_id=str(position), text=text, position=position
            )
    users = UserFactory.create_batch(labelers)
    for number, user in enumerate(users):
        while (
            assignment := leasing.lease_next_assignment(dataset=dataset, labeler=user)
        ) is not None:
            completions = list(assignment.prompt.completions.order_by("position"))
            order = [completions[0], *completions[2:], completions[1]]
            if number == labelers - 1 and int(assignment.prompt.external_id[1:]) % 5 == 0:
                order.reverse()
            rankings.submit_ranking(
                assignment=assignment,
                order=[[c.pk] for c in order],
                ratings={},
                flags={},
                request_id=uuid.uuid4(),
                seconds_spent=3.0,
                strength="better" if len(completions) == 2 else "",
            )
    return dataset


def start(dataset: Dataset, **config: Any) -> TrainingRun:
    """A queued run on `dataset` with `config`, not handed to a worker."""
    return runs.start_training_run(datasets=[dataset], config=config, enqueue=False)


@pytest.fixture
def trained_on(db: None) -> Any:
    return ranked_dataset()
