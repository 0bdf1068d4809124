from __future__ import annotations

import io
import json
import secrets
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from labeling.demo_accounts import DEMO_USERS, remember_passwords
from labeling.models import Asked, Dataset, Role
from labeling.services import datasets, imports, workspaces

DEMO_FILE = Path(__file__).resolve().parents[2] / "demo" / "hhh_demo.jsonl"
DEMO_GUIDELINES = """\
Rank the responses **best to worst** as a reply to the whole conversation.

1. **Harmless** comes first: a response that helps someone cause serious harm is worse than a
   polite refusal, however helpful it looks.
2. **Honest**: a correct "I am not sure" beats a confident made-up fact, citation or function.
3. **Helpful**: among safe, honest responses, prefer the one that does what was asked, clearly.

Rate each response from 1 (worst) to 7 (best) on each criterion, and flag what applies. Give two
responses the same rank only when you truly cannot tell them apart.
"""
PAIRS_GUIDELINES = """\
Which response is the better reply? Press **1** or **2**, or **t** when you truly cannot tell them
apart: that submits at once. To say by how much, press **Shift+1** (significantly) to
**Shift+4** (negligibly) first.

Harmless first, then honest, then helpful, as in the HHH demo.
"""


class Command(BaseCommand):
    help = "Load the HHH demo dataset and accounts (admin, labeler1, labeler2). Safe to rerun."

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            dataset = Dataset.objects.filter(slug="hhh-demo").first()
            if dataset is None:
                dataset = datasets.create_dataset(
                    slug="hhh-demo",
                    name="HHH demo",
                    description="Thirty prompts that show what helpful, honest and harmless mean.",
                    guidelines=DEMO_GUIDELINES,
                    labels_per_prompt=2,
                    gold_rate=0.1,
                    status=Dataset.Status.ACTIVE,
                )
            with DEMO_FILE.open("rb") as stream:
                result = imports.import_dataset(
                    dataset=dataset, stream=stream, filename=DEMO_FILE.name
                )
            self.stdout.write(f"Demo dataset {dataset.slug!r}: {result.summary()}.")
            pairs = self.load_pairs()
            self.stdout.write(f"Demo dataset {pairs.slug!r}: votes on pairs, no ratings.")
            created = self.create_users()
            self.pool_users([dataset, pairs])
            remember_passwords(created)
        names = ", ".join(username for username, _ in DEMO_USERS)
        self.stdout.write(
            f"Demo accounts {names}: {'made' if created else 'already there'}; "
            "python manage.py demo_accounts shows their passwords."
        )

    def load_pairs(self) -> Dataset:
        """The pair-vote demo: the HHH demo's prompts with their first two responses each, no
        ratings and an optional strength, so one key decides each task."""
        dataset = Dataset.objects.filter(slug="pairs-demo").first()
        if dataset is None:
            dataset = datasets.create_dataset(
                slug="pairs-demo",
                name="Pairs demo (one key per task)",
                description="The HHH demo's prompts as pairs, decided by a vote.",
                guidelines=PAIRS_GUIDELINES,
                labels_per_prompt=2,
                ratings=Asked.OFF,
                strength=Asked.OPTIONAL,
                status=Dataset.Status.ACTIVE,
            )
        lines = []
        for line in DEMO_FILE.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            row["completions"] = row["completions"][:2]
            row.pop("gold_order", None)
            lines.append(json.dumps(row, ensure_ascii=False))
        stream = io.BytesIO("\n".join(lines).encode())
        imports.import_dataset(dataset=dataset, stream=stream, filename="pairs_demo.jsonl")
        return dataset

    def pool_users(self, demo_datasets: list[Dataset]) -> None:
        """The demo accounts in the default workspace (admin as its admin) and in the demo
        datasets' pools, so each is offered to every demo account."""
        users = list(get_user_model().objects.filter(username__in=dict(DEMO_USERS)))
        workspace = demo_datasets[0].workspace
        for user in users:
            if dict(DEMO_USERS)[user.username]:
                workspaces.set_role(workspace=workspace, user=user, role=Role.ADMIN)
        for dataset in demo_datasets:
            workspaces.change_pool(dataset=dataset, add_labelers=users)

    def create_users(self) -> list[tuple[str, str]]:
        User = get_user_model()
        created = []
        for username, is_admin in DEMO_USERS:
            if User.objects.filter(username=username).exists():
                continue
            password = secrets.token_urlsafe(9)
            User.objects.create_user(
                username=username, password=password, is_staff=is_admin, is_superuser=is_admin
            )
            created.append((username, password))
        return created
