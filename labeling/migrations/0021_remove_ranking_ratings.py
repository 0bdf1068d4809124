from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0020_ratings_rows"),
    ]

    operations = [
        migrations.RemoveField(
            model_name="ranking",
            name="ratings",
        ),
    ]
