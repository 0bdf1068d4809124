from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from labeling.criteria import default_criteria
from labeling.models import (
    AIJudgment,
    AILabeler,
    Assignment,
    Completion,
    Dataset,
    LabelerGroup,
    Membership,
    Prompt,
    Ranking,
    RatingCriterion,
    Role,
    Workspace,
    default_workspace_id,
)
from labeling.services import leasing, slots

PASSWORD = "pass-word-123"
EVERYONE = "All labelers"


def everyone_in_default_workspace() -> LabelerGroup:
    """The default workspace's group that the factories put every user in, and in the pool of
    every dataset they make there: most tests need any labeler to be offered any dataset."""
    workspace_id = default_workspace_id()
    group, _ = LabelerGroup.objects.get_or_create(workspace_id=workspace_id, name=EVERYONE)
    return group


class UserFactory(factory.django.DjangoModelFactory):
    """A user who is a member of the default workspace (an admin if staff, else a labeler, or
    `role=...`) and in its "All labelers" group; `role=False` for no membership at all."""

    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"labeler{n}")
    password = factory.django.Password(PASSWORD)

    @factory.post_generation
    def role(user: Any, create: bool, extracted: Any, **kwargs: Any) -> None:
        if not create or extracted is False:
            return
        role = extracted or (Role.ADMIN if user.is_staff else Role.LABELER)
        Membership.objects.create(workspace_id=default_workspace_id(), user=user, role=role)
        if role != Role.SERVICE:
            everyone_in_default_workspace().members.add(user)


class WorkspaceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workspace

    name = factory.Sequence(lambda n: f"Workspace {n}")
    slug = factory.Sequence(lambda n: f"workspace-{n}")


class DatasetFactory(factory.django.DjangoModelFactory):
    """A dataset; in the default workspace its pool holds every factory-made user."""

    class Meta:
        model = Dataset
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Dataset {n}")
    slug = factory.Sequence(lambda n: f"dataset-{n}")
    status = Dataset.Status.ACTIVE
    labels_per_prompt = 2
    guidelines = "Prefer **honest** answers."

    @factory.post_generation
    def pool_everyone(dataset: Dataset, create: bool, extracted: Any, **kwargs: Any) -> None:
        if create and extracted is not False and dataset.workspace_id == default_workspace_id():
            dataset.pool_groups.add(everyone_in_default_workspace())

    @factory.post_generation
    def criteria(dataset: Dataset, create: bool, keys: list[str] | None, **kwargs: Any) -> None:
        """The default criteria (helpful, honest, harmless on 1-7), or those of `criteria=[...]`
        among them, as the service makes them."""
        if create:
            RatingCriterion.objects.bulk_create(
                RatingCriterion(dataset=dataset, **fields) for fields in default_criteria(keys)
            )


def make_criterion(dataset: Dataset, key: str, **fields: Any) -> RatingCriterion:
    """A criterion of the dataset's own (position after the others unless given)."""
    fields.setdefault("label", key.capitalize())
    fields.setdefault("position", dataset.criteria.count())
    return RatingCriterion.objects.create(dataset=dataset, key=key, **fields)


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    dataset = factory.SubFactory(DatasetFactory)
    external_id = factory.Sequence(lambda n: f"p{n}")
    messages = factory.LazyAttribute(
        lambda prompt: [{"role": "user", "content": f"Question {prompt.external_id}?"}]
    )
    content_hash = factory.Sequence(lambda n: f"{n:064d}")


class CompletionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Completion

    prompt = factory.SubFactory(PromptFactory)
    external_id = factory.Sequence(lambda n: f"c{n}")
    text = factory.Sequence(lambda n: f"Answer number {n}.")
    model_name = "model-x"
    position = factory.Sequence(lambda n: n % 9)


def make_prompt(dataset: Dataset, completions: int = 3, **fields: Any) -> Prompt:
    prompt = PromptFactory(dataset=dataset, **fields)
    for position in range(completions):
        CompletionFactory(prompt=prompt, position=position, external_id=f"c{position}")
    return prompt


def rank_as_the_file_prefers(dataset: Dataset, labeler: Any) -> int:
    """A simulated labeler ranks every prompt it can lease, preferring the completion an HH
    import marked as preferred (`hh_preferred`), else the first; returns how many it ranked."""
    import uuid

    from labeling.services import rankings

    done = 0
    while (
        assignment := leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    ) is not None:
        completions = list(assignment.prompt.completions.all())
        preferred = assignment.prompt.metadata.get("hh_preferred", completions[0].external_id)
        completions.sort(key=lambda completion: completion.external_id != preferred)
        rankings.submit_ranking(
            assignment=assignment,
            order=[[completion.pk] for completion in completions],
            ratings={},
            flags={},
            request_id=uuid.uuid4(),
            seconds_spent=1.0,
            strength="better" if len(completions) == 2 else "",
        )
        done += 1
    return done


def token_client(user: Any) -> Any:
    """A DRF test client sending `user`'s API token (no token for None: anonymous)."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def make_lease(
    prompt: Prompt,
    labeler: Any,
    *,
    leased_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> Assignment:
    """Lease this very prompt to the labeler (the service picks prompts itself), keeping the
    prompt's slot count as the leasing service does."""
    leased_at = leased_at or timezone.now()
    assignment = Assignment.objects.create(
        prompt=prompt,
        labeler=labeler,
        leased_at=leased_at,
        expires_at=expires_at or leased_at + timedelta(minutes=30),
    )
    slots.recount_slots([prompt.pk])
    return assignment


def make_team(slug: str) -> tuple[Workspace, dict[str, Any]]:
    """A workspace with one member of each role (username `<slug>-<role>`, through the
    service, so admins and managers get staff status as in use), and a dataset of its own
    (`<slug>-data`) whose pool holds its labeler."""
    from labeling.services import workspaces

    workspace = cast(Workspace, WorkspaceFactory(slug=slug, name=f"Team {slug}"))
    people: dict[str, Any] = {}
    for role in Role.values:
        user = UserFactory(
            username=f"{slug}-{role}", email=f"{slug}-{role}@example.com", role=False
        )
        workspaces.set_role(workspace=workspace, user=cast(Any, user), role=role)
        people[role] = user
    dataset = cast(
        Dataset, DatasetFactory(workspace=workspace, slug=f"{slug}-data", name=f"Data of {slug}")
    )
    dataset.pool_labelers.add(people[Role.LABELER])
    return workspace, people


class AILabelerFactory(factory.django.DjangoModelFactory):
    """An AI labeler of a dataset, with the account its rankings are stored under (active, no
    usable password, no workspace role: it never logs in)."""

    class Meta:
        model = AILabeler

    dataset = factory.SubFactory(DatasetFactory)
    user = factory.SubFactory(
        UserFactory,
        username=factory.Sequence(lambda n: f"ai-labeler-{n}"),
        password=None,
        role=False,
    )
    name = factory.Sequence(lambda n: f"Judge {n}")
    base_url = "http://127.0.0.1:8080/v1"
    model = "judge-model"


def make_ai_ranking(
    ai_labeler: AILabeler,
    prompt: Prompt,
    order: list[list[int]],
    *,
    shown: list[list[int]] | None = None,
    first_slot_picks: int | None = None,
    **judgment: Any,
) -> Ranking:
    """Store an AI labeler's ranking of `prompt` as its worker would: a ranking without an
    assignment, its comparisons (`comparison_pairs`, through the submit service's own writer)
    and the judgment: one call per list of completion ids in `shown` (default: one call, shown
    by id), each with `order` as its answer; `first_slot_picks` defaults to the calls whose
    first shown completion is in the best tie group."""
    import uuid

    from labeling.services import ranking_store

    now = timezone.now()
    ranking = Ranking.objects.create(
        dataset=prompt.dataset,
        prompt=prompt,
        labeler=ai_labeler.user,
        order=order,
        seconds_spent=0.0,
        guidelines_version=prompt.dataset.guidelines_version,
        request_id=uuid.uuid4(),
        created_at=now,
    )
    ranking_store.store_comparisons(ranking, order, "")
    shown = shown if shown is not None else [sorted(cid for group in order for cid in group)]
    calls = [{"shown": ids, "raw": "", "order": order} for ids in shown]
    if first_slot_picks is None:
        first_slot_picks = sum(1 for ids in shown if ids[0] in order[0])
    AIJudgment.objects.create(
        ai_labeler=ai_labeler,
        prompt=prompt,
        ranking=ranking,
        status=AIJudgment.Status.OK,
        model=ai_labeler.model,
        constitution_version=ai_labeler.constitution_version,
        calls=calls,
        first_slot_picks=first_slot_picks,
        created_at=now,
        **judgment,
    )
    return ranking
