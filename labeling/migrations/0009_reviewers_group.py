"""The "Reviewers" group, holding the permission to adjudicate prompts (the review queue)."""

from __future__ import annotations

from typing import Any

from django.db import migrations

GROUP = "Reviewers"


def make_group(apps: Any, schema_editor: Any) -> None:
    # The permission is made here rather than left to post_migrate, so the group can hold it.
    content_type_model = apps.get_model("contenttypes", "ContentType")
    permission_model = apps.get_model("auth", "Permission")
    group_model = apps.get_model("auth", "Group")
    content_type, _ = content_type_model.objects.get_or_create(
        app_label="labeling", model="adjudication"
    )
    permission, _ = permission_model.objects.get_or_create(
        content_type=content_type,
        codename="adjudicate_prompt",
        defaults={"name": "Can adjudicate prompts in the review queue"},
    )
    group, _ = group_model.objects.get_or_create(name=GROUP)
    group.permissions.add(permission)


def remove_group(apps: Any, schema_editor: Any) -> None:
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0008_prompt_stats_adjudication"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(make_group, remove_group)]
