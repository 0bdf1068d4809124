"""Who may do what to a dataset, a run or a model: the checks every page and API view makes
before it acts, on top of the scoped QuerySets (`Dataset.objects.visible_to`, `offered_to`,
`Workspace.objects.where`).

What a caller may not see at all is a 404 to them (another workspace's dataset, one whose pool
does not hold them); what they may see but their role may not do is a 403 that says why.
"""

from __future__ import annotations

from typing import Any, cast

from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import Http404

from labeling.accounts import role_required
from labeling.compiled import CompiledQuery
from labeling.models import (
    ROLES_ABLE_TO,
    Ability,
    Dataset,
    DatasetQuerySet,
    Membership,
    Prompt,
    Role,
    Workspace,
    may_be_offered_work,
    role_can,
)


def role_in(user: Any, workspace_id: int) -> str | None:
    """The user's role in the workspace: "admin" for a superuser, None for a non-member."""
    if user.is_superuser:
        return "admin"
    found = Membership.objects.filter(workspace=workspace_id, user=user.pk)
    return found.values_list("role", flat=True).first()


def check_ability(user: Any, workspace: Workspace | int, ability: str) -> None:
    """Raise PermissionDenied, saying which role would do, unless `user` may do `ability` in the
    workspace (for an object already known to be visible to them)."""
    workspace_id = workspace if isinstance(workspace, int) else workspace.pk
    role = role_in(user, workspace_id)
    if not role_can(role, ability):
        raise PermissionDenied(refusal(role, ability))


def refusal(role: str | None, ability: str) -> str:
    roles = ", ".join(sorted(ROLES_ABLE_TO[ability]))
    held = f"your role there is {role}" if role else "you are not a member"
    return f"Only a workspace's {roles} may {Ability(ability).label}; {held}."


def dataset_for(
    user: Any, ability: str | None, datasets: QuerySet[Dataset] | None = None, **lookup: Any
) -> Dataset:
    """The dataset `lookup` finds, if `user` may do `ability` with it (None: see it); in one
    query when they may. Http404 when they may not see it at all, PermissionDenied when they
    may see it but not do this. For labeling it must be offered to them (its pool, active)."""
    datasets = cast(
        DatasetQuerySet,
        (datasets if datasets is not None else Dataset.objects.all()).filter(**lookup),
    )
    if ability == Ability.LABEL:
        found = datasets.offered_to(user).first()
        if found is not None:
            return found
        if datasets.visible_to(user).exists():
            raise PermissionDenied(
                "This dataset is not offered to you: its pool does not hold you, you are "
                "excluded from it, or it is not open for labeling."
            )
        raise Http404("No such dataset.")
    if user.is_superuser:
        dataset = datasets.first()
        if dataset is None:
            raise Http404("No such dataset.")
        return dataset
    role = Membership.objects.filter(workspace=OuterRef("workspace"), user=user.pk)
    dataset = (
        datasets.visible_to(user).annotate(caller_role=Subquery(role.values("role")[:1])).first()
    )
    if dataset is None:
        raise Http404("No such dataset.")
    if ability is None:
        return dataset
    if not role_can(dataset.caller_role, ability):  # type: ignore[attr-defined]
        raise PermissionDenied(refusal(dataset.caller_role, ability))  # type: ignore[attr-defined]
    return dataset


# The dataset a labeler asks for their next task on, with its criteria and whether they hold a
# lease there, if it is offered to them: `dataset_for`'s query for labeling, compiled once per
# process (every next-task runs it).
OFFERED = CompiledQuery(
    lambda slug, labeler: (
        Dataset.objects.with_criteria()
        .with_leases_of(labeler)
        .filter(slug=slug)
        .active()
        .pooled(labeler)[:1]
    ),
    slug=str,
    labeler=int,
)


def dataset_to_label(user: Any, slug: str) -> Dataset:
    """`dataset_for(user, Ability.LABEL, Dataset.objects.with_criteria(), slug=slug)`, with the
    common case (it is offered) in a compiled query that also reads whether they hold a lease
    there (`DatasetQuerySet.with_leases_of`)."""
    if may_be_offered_work(user):
        found = OFFERED.first(slug=slug, labeler=user.pk)
        if found is not None:
            found.leases_of = user.pk  # type: ignore[attr-defined]  # whose `holds_lease` it is
            return found
    return dataset_for(user, Ability.LABEL, Dataset.objects.with_criteria(), slug=slug)


def prompt_for(user: Any, ability: str, slug: str, prompt_id: int) -> Prompt:
    """A prompt of the dataset `slug`, if `user` may do `ability` with it (as `dataset_for`)."""
    dataset = dataset_for(user, ability, slug=slug)
    prompt = Prompt.objects.filter(dataset=dataset, pk=prompt_id).first()
    if prompt is None:
        raise Http404("No such prompt.")
    prompt.dataset = dataset
    return prompt


def workspace_for(user: Any, ability: str | None, **lookup: Any) -> Workspace:
    """The workspace `lookup` finds, if `user` may do `ability` there (None: see it, as any
    member may): 404 when they are not a member, 403 when their role may not."""
    workspace = Workspace.objects.filter(**lookup).first()
    if workspace is None or (not user.is_superuser and role_in(user, workspace.pk) is None):
        raise Http404("No such workspace.")
    if ability is not None:
        check_ability(user, workspace, ability)
    return workspace


def check_can_create_workspace(user: Any) -> None:
    """Superusers and holders of Django's `labeling.add_workspace` permission make workspaces
    (and become their admins): anyone else gets PermissionDenied."""
    if not (user.is_active and (user.is_superuser or user.has_perm("labeling.add_workspace"))):
        raise PermissionDenied(
            "Only superusers and holders of the labeling.add_workspace permission may create "
            "workspaces."
        )


def workspace_to_create_in(user: Any, slug: str) -> Workspace:
    """Where `user` creates a dataset: the workspace named, or else the one workspace they
    manage; ValidationError (field `workspace`) when that is not one."""
    if slug:
        return workspace_for(user, Ability.MANAGE, slug=slug)
    managed = list(Workspace.objects.where(user, Ability.MANAGE)[:2])
    if not managed:
        raise PermissionDenied(refusal(None, Ability.MANAGE).replace("; you are", "; you are in"))
    if len(managed) > 1:
        raise ValidationError({"workspace": "Name the workspace (its slug): you manage several."})
    return managed[0]


def abilities_of(user: Any) -> dict[str, bool]:
    """What `user` may do in some workspace, each ability: one query, kept on the user object
    (a request's), so the pages' doors, the admin and the navigation ask it once."""
    if not (user.is_authenticated and user.is_active):
        return {}
    known = getattr(user, "_preflab_abilities", None)
    if known is None:
        if user.is_superuser:
            roles = set(Role.values)
        else:
            roles = set(Membership.objects.filter(user=user).values_list("role", flat=True))
        known = {ability: bool(roles & ROLES_ABLE_TO[ability]) for ability in Ability.values}
        user._preflab_abilities = known
    return dict(known)


def has_any_role(user: Any, ability: str) -> bool:
    """Whether `user` may do `ability` in some workspace: the door of the pages that list."""
    return abilities_of(user).get(ability, False)


manager_required = role_required(
    lambda user: has_any_role(user, Ability.MANAGE),
    "This page is for workspace admins and managers.",
)
reviewer_required = role_required(
    lambda user: has_any_role(user, Ability.REVIEW),
    "This page is for workspace admins, managers and reviewers.",
)
