from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.errors import errors_text
from labeling.formats import FORMATS
from labeling.models import Dataset
from labeling.services import datasets, imports


class Command(BaseCommand):
    # System checks import every URL's views; `make release` runs them. Startup stays quick.
    requires_system_checks: list[str] = []
    help = (
        "Import prompts and completions from a PrefLab JSONL, Anthropic HH or CSV file (.gz too)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--dataset", required=True, help="Slug; the dataset is made if new.")
        parser.add_argument("--name", default="", help="Name for a new dataset.")
        parser.add_argument("--format", choices=FORMATS, help="Default: tell from the file.")
        parser.add_argument(
            "--strict",
            action="store_true",
            help="Refuse the file if an HH pair cannot be split, instead of skipping the line.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        dataset = Dataset.objects.filter(slug=options["dataset"]).first()
        try:
            if dataset is None:
                dataset = datasets.create_dataset(slug=options["dataset"], name=options["name"])
                self.stdout.write(f"Created dataset {dataset.slug!r} (status: draft).")
            with path.open("rb") as stream:
                result = imports.import_dataset(
                    dataset=dataset,
                    stream=stream,
                    filename=path.name,
                    format=options["format"],
                    size=os.fstat(stream.fileno()).st_size,
                    strict=options["strict"],
                )
        except ValidationError as error:
            raise CommandError(f"{path}: " + "; ".join(errors_text(error))) from None
        self.stdout.write(self.style.SUCCESS(f"{path}: {result.summary()}."))
