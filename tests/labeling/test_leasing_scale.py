"""Leasing and submitting at scale: a bounded number of queries whatever the dataset's size, a
slot count that always equals what holds slots, and labelers who neither wait for each other
nor over-label (64 at once on PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from labeling import access
from labeling.models import Assignment, Prompt, Ranking
from labeling.services import exclusion, leasing, slots
from tests.factories import DatasetFactory, UserFactory, make_prompt, token_client
from tests.labeling.test_leasing import rank_in_given_order

# Transaction control is not a query: SQLite logs its BEGIN and COMMIT, PostgreSQL does not,
# and the test's own transaction turns each atomic block into a savepoint.
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")


@contextmanager
def at_most_six_queries() -> Iterator[None]:
    """Six on PostgreSQL; seven on SQLite, where a new lease is two statements (no UPDATE in a
    WITH) before the check that the dataset is still offered to the labeler."""
    with CaptureQueriesContext(connection) as captured:
        yield
    queries = [q["sql"] for q in captured if not q["sql"].startswith(TRANSACTION_CONTROL)]
    assert len(queries) <= (6 if connection.vendor == "postgresql" else 7), "\n".join(queries)


pytestmark = pytest.mark.django_db


def next_task(client, dataset):
    return client.post(reverse("labeling-api:next-task", args=[dataset.slug]))


def submit(client, task, **extra):
    ids = [c["id"] for c in task["completions"]]
    body = {
        "order": [[cid] for cid in ids],
        "ratings": {str(cid): {c["key"]: 4 for c in task["criteria"]} for cid in ids},
        "request_id": str(uuid.uuid4()),
        "seconds_spent": 3.0,
        "strength": "better" if len(ids) == 2 else "",
        **extra,
    }
    return client.post(
        reverse("labeling-api:ranking", args=[task["assignment"]]), body, format="json"
    )


@pytest.mark.parametrize("prompts", [8, 150])
@pytest.mark.parametrize("gold_rate", [0.0, 0.5])
def test_next_task_and_submit_take_a_few_queries_whatever_the_size(prompts, gold_rate):
    dataset = DatasetFactory(labels_per_prompt=2, gold_rate=gold_rate)
    for i in range(prompts):
        make_prompt(dataset, completions=2 + i % 3)
    make_prompt(dataset, is_gold=True, gold_order=[["c0"], ["c1"], ["c2"]])
    others = UserFactory.create_batch(3)
    for other in others:  # some prompts partly labeled, some leases live
        rank_in_given_order(leasing.lease_next_assignment(dataset=dataset, labeler=other))
        leasing.lease_next_assignment(dataset=dataset, labeler=other)
    client = token_client(UserFactory())
    for _ in range(3):
        with at_most_six_queries():
            task = next_task(client, dataset).json()
        with at_most_six_queries():  # the current lease again
            assert next_task(client, dataset).json()["assignment"] == task["assignment"]
        with at_most_six_queries():
            assert submit(client, task).status_code == 201


def test_the_access_check_tells_the_lease_whether_the_labeler_holds_one():
    """Without gold, a labeler who holds no lease gets a new task in five queries (token,
    dataset, lease, pool check, completions): the dataset's query said they hold none. One
    who holds a lease gets it back; and what was read for one labeler says nothing of another."""
    dataset = DatasetFactory(labels_per_prompt=2)
    for _ in range(3):
        make_prompt(dataset, completions=3)
    ann, bob = UserFactory.create_batch(2)
    dataset.pool_labelers.add(ann, bob)
    client = token_client(ann)
    with CaptureQueriesContext(connection) as captured:
        task = next_task(client, dataset).json()
    queries = [q["sql"] for q in captured if not q["sql"].startswith(TRANSACTION_CONTROL)]
    leasing_queries = 5 if connection.vendor == "postgresql" else 6
    assert len(queries) == leasing_queries, "\n".join(queries)
    assert not any('"labeling_assignment"."leased_at"' in sql for sql in queries)
    assert next_task(client, dataset).json()["assignment"] == task["assignment"]
    read_for_ann = access.dataset_to_label(ann, dataset.slug)
    assert read_for_ann.holds_lease and read_for_ann.leases_of == ann.pk
    held = leasing.lease_next_assignment(dataset=read_for_ann, labeler=ann)
    assert held.pk == task["assignment"]
    bobs = leasing.lease_next_assignment(
        dataset=access.dataset_to_label(bob, dataset.slug), labeler=bob
    )
    assert bobs.pk != held.pk
    # Read for ann (who holds a lease), used for bob (who holds one too): bob's is looked up.
    assert leasing.lease_next_assignment(dataset=read_for_ann, labeler=bob).pk == bobs.pk
    read_for_bob = access.dataset_to_label(bob, dataset.slug)
    Assignment.objects.filter(pk=held.pk).update(status=Assignment.Status.SKIPPED)
    read_for_ann = access.dataset_to_label(ann, dataset.slug)
    assert not read_for_ann.holds_lease
    # Read for ann (who holds none now), used for bob: bob's lease is still found.
    assert read_for_bob.holds_lease
    assert leasing.lease_next_assignment(dataset=read_for_ann, labeler=bob).pk == bobs.pk


def test_the_hint_that_a_labeler_holds_no_lease_is_used_once():
    """A dataset read when the labeler held no lease, used again after it leased them one,
    gives that lease back rather than a second one."""
    dataset = DatasetFactory(labels_per_prompt=2)
    for _ in range(3):
        make_prompt(dataset, completions=2)
    ann = UserFactory()
    dataset.pool_labelers.add(ann)
    read = access.dataset_to_label(ann, dataset.slug)
    assert not read.holds_lease
    first = leasing.lease_next_assignment(dataset=read, labeler=ann)
    assert leasing.lease_next_assignment(dataset=read, labeler=ann).pk == first.pk
    assert Assignment.objects.filter(labeler=ann).count() == 1


def test_an_abandoned_lease_frees_its_slot_once_expired_by_the_job_or_a_full_dataset(settings):
    dataset = DatasetFactory(labels_per_prompt=1)
    prompt, other = make_prompt(dataset), make_prompt(dataset)
    now = timezone.now()
    later = now + timedelta(minutes=settings.PREFLAB_LEASE_MINUTES + 1)
    ann, bob, cat = UserFactory.create_batch(3)
    abandoned = leasing.lease_next_assignment(dataset=dataset, labeler=ann, now=now)
    # While another prompt is open, a stale lease is left to the periodic job.
    assert leasing.lease_next_assignment(dataset=dataset, labeler=bob, now=later).prompt == other
    abandoned.refresh_from_db()
    assert abandoned.status == Assignment.Status.LEASED
    assert slots.expire_stale_leases(now=later) == 1
    assert leasing.lease_next_assignment(dataset=dataset, labeler=cat, now=later).prompt == prompt
    prompt.refresh_from_db()
    assert prompt.slots_taken == 1


def assert_counts_are_true() -> None:
    """`slots_taken` of every prompt equals its assignments that hold a slot."""
    held = Prompt.objects.annotate(
        held=Count(
            "assignments",
            filter=Q(
                assignments__status__in=Assignment.SLOT_HOLDING_STATUSES,
                assignments__labeler__is_active=True,
            ),
        )
    )
    assert {p.pk: p.slots_taken for p in held} == {p.pk: p.held for p in held}


def test_a_lease_that_cannot_be_inserted_takes_no_slot(monkeypatch):
    """Two requests of one labeler (two tabs) can pick the same prompt; the second one's insert
    then fails on the unique (prompt, labeler), and its raised count is undone with it."""
    dataset = DatasetFactory(labels_per_prompt=2)
    prompt = make_prompt(dataset)
    labeler = UserFactory()
    first = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    # What the race looks like to the second request: its candidate query, run before the first
    # one's lease was committed, does not see that lease.
    monkeypatch.setattr(
        leasing, "CANDIDATE", leasing.CANDIDATE.replace("AND NOT EXISTS", "AND EXISTS")
    )
    again = leasing._lease_if_offered(dataset, labeler, gold_due=False, now=timezone.now())
    assert again == first
    prompt.refresh_from_db()
    assert prompt.slots_taken == 1
    assert_counts_are_true()


def test_another_integrity_error_while_leasing_is_not_taken_for_a_second_lease(monkeypatch):
    dataset = DatasetFactory(labels_per_prompt=2)
    make_prompt(dataset)
    labeler = UserFactory()

    def refuse(*args, **kwargs):
        raise IntegrityError("insert or update violates foreign key constraint")

    monkeypatch.setattr(leasing, "_take_slot_and_lease", refuse)
    with pytest.raises(IntegrityError, match="foreign key"):
        leasing.lease_next_assignment(dataset=dataset, labeler=labeler)


def test_every_way_a_slot_is_taken_or_given_back_keeps_the_count(staff, settings):
    dataset = DatasetFactory(labels_per_prompt=2)
    for _ in range(4):
        make_prompt(dataset, completions=3)
    ann, bob, cat = UserFactory.create_batch(3)
    now = timezone.now()
    later = now + timedelta(minutes=settings.PREFLAB_LEASE_MINUTES + 1)

    rank_in_given_order(leasing.lease_next_assignment(dataset=dataset, labeler=ann, now=now))
    skipped = leasing.lease_next_assignment(dataset=dataset, labeler=ann, now=now)
    leasing.skip_assignment(assignment=skipped, reason="unclear")
    late = leasing.lease_next_assignment(dataset=dataset, labeler=bob, now=now)
    assert_counts_are_true()
    slots.expire_stale_leases(now=later)
    assert_counts_are_true()
    rank_in_given_order(late)  # an expired lease whose slot is still free is kept
    assert_counts_are_true()
    leasing.lease_next_assignment(dataset=dataset, labeler=cat, now=later)
    slots.release_assignments(assignments=Assignment.objects.filter(labeler=cat))
    assert_counts_are_true()
    exclusion.exclude_labeler(labeler=ann, by=staff)
    assert_counts_are_true()
    exclusion.reinstate_labeler(labeler=ann, by=staff)
    assert_counts_are_true()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("threads", "prompt_count", "gold_rate"), [(16, 40, 0.0), (64, 60, 0.1)])
def test_labelers_at_once_drain_a_dataset_without_overlap_or_loss(threads, prompt_count, gold_rate):
    """Labelers in threads, each with its own database connection, lease and rank until no work
    is left: every prompt gets exactly labels_per_prompt labels, nobody ranks a prompt twice."""
    dataset = DatasetFactory(labels_per_prompt=3, gold_rate=gold_rate)
    prompts = [make_prompt(dataset, completions=2 + i % 3) for i in range(prompt_count)]
    gold = make_prompt(dataset, is_gold=True, gold_order=[["c0"], ["c1"], ["c2"]])
    labelers = UserFactory.create_batch(threads)
    errors: list[BaseException] = []
    start = threading.Barrier(len(labelers))

    def work(user) -> None:
        try:
            start.wait()
            for _ in range(prompt_count + 2):  # bounded: at most every prompt and the gold one
                assignment = leasing.lease_next_assignment(dataset=dataset, labeler=user)
                if assignment is None:
                    break
                rank_in_given_order(assignment)
        except BaseException as error:  # reported to the main thread below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(user,)) for user in labelers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not errors
    assert all(not thread.is_alive() for thread in threads)
    per_prompt = Counter(Ranking.objects.exclude(prompt=gold).values_list("prompt_id", flat=True))
    assert per_prompt == {prompt.pk: 3 for prompt in prompts}
    pairs = list(Ranking.objects.values_list("prompt_id", "labeler_id"))
    assert len(pairs) == len(set(pairs))
    assert Assignment.objects.exclude(status=Assignment.Status.SUBMITTED).count() == 0
    assert_counts_are_true()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_submissions_to_one_dataset_do_not_wait_for_each_other():
    """A submission still open does not hold up another one to the same dataset (only an export
    reading its cursor waits for it: tests/labeling/test_exports.py)."""
    dataset = DatasetFactory(labels_per_prompt=1)
    for _ in range(2):
        make_prompt(dataset, completions=3)
    slow, fast = UserFactory(), UserFactory()
    holding, release, fast_done = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_submit() -> None:
        try:
            with transaction.atomic():
                rank_in_given_order(leasing.lease_next_assignment(dataset=dataset, labeler=slow))
                holding.set()
                release.wait(30)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    def fast_submit() -> None:
        try:
            rank_in_given_order(leasing.lease_next_assignment(dataset=dataset, labeler=fast))
            fast_done.set()
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=slow_submit), threading.Thread(target=fast_submit)]
    threads[0].start()
    assert holding.wait(30)
    threads[1].start()
    finished_while_the_other_was_open = fast_done.wait(10)
    release.set()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert finished_while_the_other_was_open
    assert Ranking.objects.count() == 2
