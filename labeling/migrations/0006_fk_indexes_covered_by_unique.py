"""Prompt.dataset and Completion.prompt lose their own indexes: the unique (dataset, external_id)
and (prompt, external_id) indexes start with the same column and serve the same lookups, and
every imported row wrote both. Only the indexes are dropped (not the foreign keys, which Django's
AlterField would drop and add again, checking every row under a lock)."""

import django.db.models.deletion
from django.db import migrations, models

INDEXES = [  # Django's names for them, the same on PostgreSQL and SQLite
    ("labeling_completion_prompt_id_903caddd", "labeling_completion", "prompt_id"),
    ("labeling_prompt_dataset_id_09abe0d9", "labeling_prompt", "dataset_id"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0005_prompt_slots_taken"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="completion",
                    name="prompt",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="completions",
                        to="labeling.prompt",
                    ),
                ),
                migrations.AlterField(
                    model_name="prompt",
                    name="dataset",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="prompts",
                        to="labeling.dataset",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{name}"',
                    reverse_sql=f'CREATE INDEX "{name}" ON "{table}" ("{column}")',
                )
                for name, table, column in INDEXES
            ],
        ),
    ]
