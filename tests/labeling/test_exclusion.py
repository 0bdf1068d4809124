"""Excluding and reinstating labelers in the service: who may, undoing it, and what it frees."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.core.exceptions import ValidationError
from django.utils import timezone

from labeling.models import Assignment, Comparison, Ranking
from labeling.services import exclusion, leasing, rankings
from tests.factories import UserFactory, make_lease, make_prompt
from tests.labeling.quality_data import rank


def test_exclusion_is_one_action_that_can_be_undone(small, people, staff):
    dataset, bob = small["dataset"], people["bob"]
    cursor = Comparison.objects.order_by("-pk").values_list("pk", flat=True).first()
    exported = Comparison.objects.filter(dataset=dataset).exported
    before = exported(cursor=cursor).count()
    bobs = exported(cursor=cursor).filter(labeler=bob).count()
    open_prompt = small["p4"]
    now = timezone.now()
    lease = make_lease(open_prompt, bob, leased_at=now)

    exclusion.exclude_labeler(labeler=bob, by=staff)

    bob.refresh_from_db()
    lease.refresh_from_db()
    assert bob.is_active is False
    assert lease.status == Assignment.Status.EXPIRED
    assert exported(cursor=cursor).count() == before - bobs
    assert not exported(cursor=cursor).filter(labeler=bob).exists()
    assert LogEntry.objects.filter(object_id=str(bob.pk)).count() == 1
    # Bob's labels no longer hold slots: p1 (ann + bob) needs a second label again.
    newcomer = UserFactory()
    leased = {
        leasing.lease_next_assignment(dataset=dataset, labeler=newcomer).prompt_id for _ in range(1)
    }
    assert leased & {small["p1"].pk, small["p2"].pk, small["p5"].pk}

    exclusion.reinstate_labeler(labeler=bob, by=staff)
    bob.refresh_from_db()
    assert bob.is_active is True
    assert exported(cursor=cursor).count() == before


def test_staff_cannot_exclude_themselves(staff):
    with pytest.raises(ValidationError, match="your own account"):
        exclusion.exclude_labeler(labeler=staff, by=staff)


def test_excluding_takes_the_permission_to_change_users(small, people, staff):
    manager = UserFactory(is_staff=True)
    with pytest.raises(ValidationError, match="permission to change users"):
        exclusion.exclude_labeler(labeler=people["bob"], by=manager)
    from django.contrib.auth.models import Permission

    manager.user_permissions.add(Permission.objects.get(codename="change_user"))
    manager = type(manager).objects.get(pk=manager.pk)  # fresh permission cache
    other_staff = UserFactory(is_staff=True)
    with pytest.raises(ValidationError, match="Only a superuser"):
        exclusion.exclude_labeler(labeler=other_staff, by=manager)
    exclusion.exclude_labeler(labeler=people["bob"], by=manager)
    people["bob"].refresh_from_db()
    assert not people["bob"].is_active
    # A deactivated superuser cannot be brought back by a non-superuser either.
    boss = UserFactory(is_staff=True, is_superuser=True, is_active=False)
    with pytest.raises(ValidationError, match="Only a superuser"):
        exclusion.reinstate_labeler(labeler=boss, by=manager)


def test_an_expired_lease_is_still_submittable_when_the_slot_holder_was_excluded(
    dataset, people, staff
):
    prompt = make_prompt(dataset, 2)  # labels_per_prompt is 2
    ann, bob, cat = people["ann"], people["bob"], people["cat"]
    rank(prompt, ann, "c0 > c1")
    now = timezone.now()
    late = make_lease(prompt, cat, leased_at=now - timedelta(hours=2), expires_at=now)
    rank(prompt, bob, "c1 > c0")  # took the last slot while cat's lease was expired
    late.status = Assignment.Status.EXPIRED
    late.save()
    exclusion.exclude_labeler(labeler=bob, by=staff)
    ids = dict(prompt.completions.values_list("external_id", "pk"))
    rankings.submit_ranking(
        assignment=late,
        order=[[ids["c0"]], [ids["c1"]]],
        ratings={cid: {c: 4 for c in dataset.criterion_keys} for cid in ids.values()},
        flags={},
        request_id=uuid.uuid4(),
        seconds_spent=5.0,
        strength="slightly",
    )
    assert Ranking.objects.filter(labeler=cat, prompt=prompt).exists()
