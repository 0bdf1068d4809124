import django.core.validators
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0015_audit_trail"),
    ]

    operations = [
        migrations.CreateModel(
            name="RatingCriterion",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "key",
                    models.SlugField(help_text="Names the criterion in the API and exports."),
                ),
                ("label", models.CharField(max_length=100)),
                (
                    "description",
                    models.TextField(blank=True, help_text="Shown to labelers beside the scale."),
                ),
                (
                    "scale_min",
                    models.SmallIntegerField(
                        default=1,
                        validators=[
                            django.core.validators.MinValueValidator(0),
                            django.core.validators.MaxValueValidator(10),
                        ],
                    ),
                ),
                (
                    "scale_max",
                    models.SmallIntegerField(
                        default=7,
                        validators=[
                            django.core.validators.MinValueValidator(0),
                            django.core.validators.MaxValueValidator(10),
                        ],
                    ),
                ),
                (
                    "min_label",
                    models.CharField(
                        blank=True, help_text="What the lowest means.", max_length=100
                    ),
                ),
                (
                    "max_label",
                    models.CharField(
                        blank=True, help_text="What the highest means.", max_length=100
                    ),
                ),
                (
                    "position",
                    models.PositiveSmallIntegerField(default=0, help_text="Order on the page."),
                ),
                (
                    "dataset",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="criteria",
                        to="labeling.dataset",
                    ),
                ),
            ],
            options={
                "ordering": ["position", "pk"],
            },
        ),
        migrations.AddConstraint(
            model_name="ratingcriterion",
            constraint=models.UniqueConstraint(
                fields=("dataset", "key"), name="criterion_key_per_dataset"
            ),
        ),
        migrations.AddConstraint(
            model_name="ratingcriterion",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("scale_min__lt", models.F("scale_max")),
                    ("scale_min__gte", 0),
                    ("scale_max__lte", 10),
                ),
                name="criterion_scale",
            ),
        ),
    ]
