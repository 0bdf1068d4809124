from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0017_criteria_rows"),
    ]

    operations = [
        migrations.RemoveField(
            model_name="dataset",
            name="criteria",
        ),
    ]
