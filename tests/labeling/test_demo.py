from __future__ import annotations

import io
import json

from django.contrib.auth import get_user_model
from django.core.management import call_command

from labeling.models import Completion, Dataset, Prompt


def test_demo_loads_once_and_keeps_the_passwords_for_the_box(db, demo_accounts_file):
    first = io.StringIO()
    call_command("load_demo", stdout=first)
    second = io.StringIO()
    call_command("load_demo", stdout=second)

    dataset = Dataset.objects.get(slug="hhh-demo")
    assert dataset.status == Dataset.Status.ACTIVE
    assert Prompt.objects.filter(dataset=dataset).count() == 30
    counts = [p.completions.count() for p in Prompt.objects.filter(dataset=dataset)]
    assert min(counts) >= 2
    assert max(counts) <= 4
    assert Prompt.objects.filter(dataset=dataset, is_gold=True).count() == 2
    assert any(len(p.messages) > 1 for p in Prompt.objects.all())
    assert Completion.objects.filter(prompt__dataset=dataset).count() == sum(counts)

    users = get_user_model().objects.order_by("username")
    assert [(u.username, u.is_staff) for u in users] == [
        ("admin", True),
        ("labeler1", False),
        ("labeler2", False),
    ]
    assert "0 prompts imported, 30 already present" in second.getvalue()
    assert "already there" in second.getvalue()
    passwords = json.loads(demo_accounts_file.read_text())
    assert sorted(passwords) == ["admin", "labeler1", "labeler2"]
    assert all(users.get(username=name).check_password(passwords[name]) for name in passwords)
    assert demo_accounts_file.stat().st_mode & 0o777 == 0o600
    # Mid-log, where the worker's banner would scroll them away, no password is printed.
    assert not any(password in first.getvalue() for password in passwords.values())


def test_demo_has_a_pair_vote_dataset_beside_the_hhh_one(db):
    call_command("load_demo", stdout=io.StringIO())
    call_command("load_demo", stdout=io.StringIO())
    pairs = Dataset.objects.get(slug="pairs-demo")
    assert (pairs.status, pairs.ratings, pairs.strength) == ("active", "off", "optional")
    assert pairs.votes
    prompts = Prompt.objects.filter(dataset=pairs)
    assert prompts.count() == 30
    assert {p.completions.count() for p in prompts} == {2}
    assert not prompts.filter(is_gold=True).exists()
