"""Data from before workspaces moves into the default workspace, each account with the role it
had: staff are admins, the `service` group's members service accounts, the "Reviewers" group's
reviewers, every other account a labeler. The "All labelers" group holds every labeler and is
put in the pool of every dataset, so each is offered to whoever labeled it before."""

from __future__ import annotations

from typing import Any

from django.db import migrations

ALL_LABELERS = "All labelers"


def role_of(user: Any, groups: set[str]) -> str:
    if user.is_staff or user.is_superuser:
        return "admin"
    if "service" in groups:
        return "service"
    if "Reviewers" in groups:
        return "reviewer"
    return "labeler"


def into_default_workspace(apps: Any, schema_editor: Any) -> None:
    workspace_model = apps.get_model("labeling", "Workspace")
    dataset_model = apps.get_model("labeling", "Dataset")
    user_model = apps.get_model("auth", "User")
    membership_model = apps.get_model("labeling", "Membership")
    group_model = apps.get_model("labeling", "LabelerGroup")
    workspace, _ = workspace_model.objects.get_or_create(
        slug="default", defaults={"name": "Default workspace"}
    )
    dataset_model.objects.filter(workspace__isnull=True).update(workspace=workspace)
    users = user_model.objects.prefetch_related("groups").order_by("pk")
    roles = {
        user.pk: role_of(user, {group.name for group in user.groups.all()}) for user in users
    }
    membership_model.objects.bulk_create(
        [membership_model(workspace=workspace, user_id=pk, role=role) for pk, role in roles.items()],
        ignore_conflicts=True,
    )
    everyone, _ = group_model.objects.get_or_create(workspace=workspace, name=ALL_LABELERS)
    everyone.members.add(*[pk for pk, role in roles.items() if role != "service"])
    for dataset in dataset_model.objects.filter(workspace=workspace):
        dataset.pool_groups.add(everyone)


def out_of_workspaces(apps: Any, schema_editor: Any) -> None:
    apps.get_model("labeling", "Dataset").objects.update(workspace=None)


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0012_workspaces"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(into_default_workspace, out_of_workspaces)]
