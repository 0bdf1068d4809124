"""The admin is one more door: it edits only what is safe and goes through the services."""

from __future__ import annotations

import uuid

from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from labeling.models import Assignment, Completion, Prompt
from labeling.services import leasing, rankings
from tests.factories import UserFactory, make_prompt


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_what_was_ranked_cannot_be_edited(client, staff, dataset):
    prompt = make_prompt(dataset, completions=2, metadata={"topic": "a"})
    client.force_login(staff)
    url = reverse("admin:labeling_prompt_change", args=[prompt.pk])
    page = client.get(url).content.decode()
    assert 'name="messages"' not in page and 'name="metadata"' in page
    response = client.post(
        url,
        {
            "messages": '[{"role": "user", "content": "Edited"}]',
            "dataset": "999",
            "external_id": "renamed",
            "metadata": '{"topic": "b"}',
            "gold_order": "",
            "completions-TOTAL_FORMS": "2",
            "completions-INITIAL_FORMS": "2",
            "completions-0-id": str(prompt.completions.all()[0].pk),
            "completions-0-text": "Edited",
            "completions-1-id": str(prompt.completions.all()[1].pk),
        },
    )
    assert response.status_code == 302
    stored = Prompt.objects.get(pk=prompt.pk)
    assert stored.metadata == {"topic": "b"}  # metadata is safe to edit
    assert (stored.messages, stored.external_id, stored.dataset_id, stored.content_hash) == (
        prompt.messages,
        prompt.external_id,
        prompt.dataset_id,
        prompt.content_hash,
    )
    assert "Edited" not in Completion.objects.filter(prompt=prompt).values_list("text", flat=True)
    assert client.get(reverse("admin:labeling_prompt_add")).status_code == 403


def test_completions_and_assignments_are_read_only(client, staff, dataset, prompt, labeler):
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    client.force_login(staff)
    completion = prompt.completions.first()
    for name, pk in (("completion", completion.pk), ("assignment", assignment.pk)):
        change = reverse(f"admin:labeling_{name}_change", args=[pk])
        assert client.get(change).status_code == 200  # viewable
        assert client.post(change, {"text": "x", "status": "submitted"}).status_code == 403
        assert client.get(reverse(f"admin:labeling_{name}_add")).status_code == 403
        assert client.get(reverse(f"admin:labeling_{name}_delete", args=[pk])).status_code == 403


def test_releasing_leases_returns_them_to_the_pool(client, staff, dataset, prompt, labeler):
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    client.force_login(staff)
    response = client.post(
        reverse("admin:labeling_assignment_changelist"),
        {"action": "release", "_selected_action": [assignment.pk]},
    )
    assert response.status_code == 302
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.EXPIRED
    assert assignment.expires_at <= timezone.now()
    assert messages_of(response) == ["1 leased tasks went back to the pool."]


def test_refused_reinstatement_is_a_message_not_an_error(client, dataset):
    manager = UserFactory(is_staff=True)
    manager.user_permissions.add(
        *Permission.objects.filter(codename__in=["change_user", "view_user"])
    )
    excluded_staff = UserFactory(is_staff=True, is_active=False)
    client.force_login(manager)
    response = client.post(
        reverse("admin:auth_user_changelist"),
        {"action": "reinstate_labelers", "_selected_action": [excluded_staff.pk]},
    )
    assert response.status_code == 302
    assert messages_of(response) == [
        f"{excluded_staff.username}: labeler: Only a superuser may exclude or reinstate staff "
        "and service accounts."
    ]
    excluded_staff.refresh_from_db()
    assert not excluded_staff.is_active


def test_ranked_prompts_datasets_and_labelers_cannot_be_deleted(client, staff, dataset, labeler):
    prompt = make_prompt(dataset, completions=2)
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    a, b = prompt.completions.values_list("pk", flat=True)
    rankings.submit_ranking(
        assignment=assignment,
        order=[[a], [b]],
        ratings={
            a: {c: 4 for c in dataset.criterion_keys},
            b: {c: 4 for c in dataset.criterion_keys},
        },
        flags={},
        request_id=uuid.uuid4(),
        seconds_spent=3,
        strength="better",
    )
    client.force_login(staff)
    for url in (
        reverse("admin:labeling_prompt_delete", args=[prompt.pk]),
        reverse("admin:labeling_dataset_delete", args=[dataset.pk]),
        reverse("admin:auth_user_delete", args=[labeler.pk]),
    ):
        assert client.get(url).status_code == 403, url
    for name in ("labeling_dataset", "auth_user", "labeling_prompt"):
        page = client.get(reverse(f"admin:{name}_changelist")).content.decode()
        assert 'value="delete_selected"' not in page, name
    unranked = UserFactory()
    assert client.get(reverse("admin:auth_user_delete", args=[unranked.pk])).status_code == 200
