from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.models import Dataset, Labelers
from rewards.services import runs


class Command(BaseCommand):
    help = "Train a reward model on one or more datasets, here and now (or --queue for a worker)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dataset", action="append", required=True, help="Slug; repeatable.")
        parser.add_argument("--held-out-share", type=float, default=runs.DEFAULT_HELD_OUT_SHARE)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--include-gold", action="store_true", help="Train on gold prompts too."
        )
        parser.add_argument(
            "--head",
            action="append",
            default=[],
            help="Also train a head on this rating criterion (helpful, honest, harmless); "
            "repeatable.",
        )
        parser.add_argument(
            "--labelers",
            choices=Labelers.values,
            default=Labelers.HUMAN,
            help="Whose comparisons: human labelers' (the default), AI labelers' or all.",
        )
        parser.add_argument("--queue", action="store_true", help="Leave the run to a worker.")

    def handle(self, *args: Any, **options: Any) -> None:
        slugs = options["dataset"]
        datasets = list(Dataset.objects.filter(slug__in=slugs))
        missing = set(slugs) - {d.slug for d in datasets}
        if missing:
            raise CommandError(f"No dataset {', '.join(sorted(missing))}.")
        config = {
            "held_out_share": options["held_out_share"],
            "seed": options["seed"],
            "include_gold": options["include_gold"],
            "labelers": options["labelers"],
        }
        if options["head"]:
            config["heads"] = options["head"]
        try:
            run = runs.start_training_run(
                datasets=datasets, config=config, enqueue=options["queue"]
            )
            if options["queue"]:
                self.stdout.write(f"Queued training run {run.pk}.")
                return
            self.stdout.write(f"Training run {run.pk} on {', '.join(slugs)}...")
            finished = runs.run_training(run_id=run.pk)
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        if finished is None:
            raise CommandError(f"Training run {run.pk} was taken by someone else.")
        run = finished
        held_out = run.metrics["held_out"]
        model = run.reward_model
        self.stdout.write(
            self.style.SUCCESS(
                f"Reward model v{model.version}: held-out pairwise accuracy "
                f"{held_out['accuracy']:.3f}, log loss {held_out['log_loss']:.3f} "
                f"on {run.metrics['comparisons']['held_out']} pairs; "
                f"files in {model.directory}."
            )
        )
