"""Reading labeler pools: who is in a dataset's pool and through what, which labeler is in
which pool of a workspace, and the users and groups that names given by a manager stand for.
(Changing a pool is `labeling.services.workspaces.change_pool`.)"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypedDict

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from labeling.models import (
    ROLES_ABLE_TO,
    Ability,
    Dataset,
    Exclusion,
    LabelerGroup,
    Membership,
    Workspace,
)


def split_names(text: str) -> list[str]:
    """Names typed one a line, or separated by commas or spaces; each once, in order."""
    return list(dict.fromkeys(name for name in re.split(r"[\s,]+", text) if name))


def users_named(usernames: Iterable[str], *, field_name: str = "labelers") -> list[User]:
    """The accounts of these usernames, in order; ValidationError naming the field and every
    unknown username."""
    names = list(dict.fromkeys(usernames))
    found = {user.username: user for user in User.objects.filter(username__in=names)}
    unknown = [name for name in names if name not in found]
    if unknown:
        raise ValidationError({field_name: f"No such users: {', '.join(unknown)}."})
    return [found[name] for name in names]


def groups_named(
    workspace: Workspace | int, names: Iterable[str], *, field_name: str = "groups"
) -> list[LabelerGroup]:
    """The workspace's groups of these names, in order; ValidationError naming the field and
    every unknown name."""
    names = list(dict.fromkeys(names))
    groups = LabelerGroup.objects.filter(workspace=workspace, name__in=names)
    found = {group.name: group for group in groups}
    unknown = [name for name in names if name not in found]
    if unknown:
        raise ValidationError(
            {field_name: f"No such groups in this workspace: {', '.join(unknown)}."}
        )
    return [found[name] for name in names]


def datasets_named(
    workspace: Workspace | int, slugs: Iterable[str], *, field_name: str = "datasets"
) -> list[Dataset]:
    """The workspace's datasets of these slugs, in order; ValidationError naming the field and
    every unknown slug."""
    slugs = list(dict.fromkeys(slugs))
    found = {d.slug: d for d in Dataset.objects.filter(workspace=workspace, slug__in=slugs)}
    unknown = [slug for slug in slugs if slug not in found]
    if unknown:
        raise ValidationError(
            {field_name: f"No such datasets in this workspace: {', '.join(unknown)}."}
        )
    return [found[slug] for slug in slugs]


class PoolLabeler(TypedDict):
    username: str
    by_name: bool
    groups: list[str]
    excluded: bool


class PoolGroup(TypedDict):
    name: str
    members: list[str]


class Pool(TypedDict):
    labelers: list[PoolLabeler]
    groups: list[PoolGroup]


def pool_of(dataset: Dataset) -> Pool:
    """The dataset's pool: each labeler by name, with whether they are in it by name, the groups
    through which they are, and whether an exclusion keeps them out; and its groups: four
    queries."""
    by_name = set(dataset.pool_labelers.values_list("username", flat=True))
    groups = list(dataset.pool_groups.order_by("name").prefetch_related("members"))
    through: dict[str, list[str]] = defaultdict(list)
    for group in groups:
        for member in group.members.all():
            through[member.username].append(group.name)
    excluded = set(Exclusion.objects.covering(dataset).values_list("labeler__username", flat=True))
    return {
        "labelers": [
            {
                "username": username,
                "by_name": username in by_name,
                "groups": through.get(username, []),
                "excluded": username in excluded,
            }
            for username in sorted(by_name | set(through))
        ],
        "groups": [
            {"name": group.name, "members": sorted(m.username for m in group.members.all())}
            for group in groups
        ],
    }


@dataclass
class PoolMatrix:
    """Which labeler is in which pool of a workspace: `cells[username][dataset slug]` is
    "name", "group" (through one), "excluded" (in the pool but excluded) or absent."""

    datasets: list[Dataset]
    usernames: list[str]
    cells: dict[str, dict[str, str]] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, list[str]]]:
        return [
            (name, [self.cells.get(name, {}).get(d.slug, "") for d in self.datasets])
            for name in self.usernames
        ]


def pool_matrix(workspace: Workspace) -> PoolMatrix:
    """The pools of the workspace's datasets, over its members who may label and anyone in a
    pool: six queries, whatever the numbers."""
    datasets = list(Dataset.objects.filter(workspace=workspace).order_by("name"))
    slugs = {dataset.pk: dataset.slug for dataset in datasets}
    cells: dict[str, dict[str, str]] = defaultdict(dict)
    in_groups: dict[int, list[str]] = defaultdict(list)
    for group_id, username in LabelerGroup.members.through.objects.filter(
        labelergroup__workspace=workspace
    ).values_list("labelergroup_id", "user__username"):
        in_groups[group_id].append(username)
    for dataset_id, group_id in Dataset.pool_groups.through.objects.filter(
        dataset__workspace=workspace
    ).values_list("dataset_id", "labelergroup_id"):
        for username in in_groups[group_id]:
            cells[username][slugs[dataset_id]] = "group"
    for dataset_id, username in Dataset.pool_labelers.through.objects.filter(
        dataset__workspace=workspace
    ).values_list("dataset_id", "user__username"):
        cells[username][slugs[dataset_id]] = "name"
    for dataset_id, username in Exclusion.objects.filter(workspace=workspace).values_list(
        "dataset_id", "labeler__username"
    ):
        for slug in [slugs[dataset_id]] if dataset_id else slugs.values():
            if slug in cells.get(username, {}):
                cells[username][slug] = "excluded"
    members = Membership.objects.filter(
        workspace=workspace, role__in=ROLES_ABLE_TO[Ability.LABEL]
    ).values_list("user__username", flat=True)
    usernames = sorted(set(members) | set(cells))
    return PoolMatrix(datasets=datasets, usernames=usernames, cells=dict(cells))
