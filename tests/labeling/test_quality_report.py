"""The quality report: its figures on a small dataset worked out by hand, when it is stale and
refreshed (inline or by the worker), failed refreshes and invalidation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from labeling import report
from labeling.models import QualityReport, Ranking
from labeling.services import datasets, exclusion, quality_report
from tests.factories import DatasetFactory, UserFactory, make_prompt
from tests.labeling.quality_data import rank, report_of, row_of


def test_report_matches_the_hand_computed_figures(small):
    data = report_of(small["dataset"])
    assert data["progress"] == {
        "prompts": 5,
        "done": 3,
        "partly": 1,
        "not_started": 1,
        "gold": 1,
        "labels_per_prompt": 2,
    }
    pairwise = data["agreement"]["pairwise"]
    assert pairwise["rate"] == pytest.approx(0.5)
    assert pairwise["count"] == 7
    assert pairwise["low"] <= 0.5 <= pairwise["high"]
    # Identical helpful ratings on p1 (the only prompt rated twice): perfect interval agreement.
    assert data["agreement"]["alpha_ratings"]["helpful"]["alpha"] == pytest.approx(1.0)
    assert row_of(data, "ann")["agreement"] == pytest.approx(0.5)
    assert row_of(data, "ann")["agreement_pairs"] == 7
    assert row_of(data, "bob")["agreement"] == pytest.approx(0.5)
    assert row_of(data, "cat")["agreement"] == pytest.approx(0.5)
    assert row_of(data, "ann")["gold"] == pytest.approx(2 / 3)
    assert row_of(data, "bob")["gold"] is None
    assert row_of(data, "ann")["rankings"] == 5
    # One flagged completion out of 3 + 3 + 2 + 3 + 3 that ann saw.
    assert row_of(data, "ann")["flag_rate"] == pytest.approx(1 / 14)
    flags = {row["flag"]: row["count"] for row in data["flags"]["by_flag"]}
    assert flags["hallucination"] == 1
    assert data["flags"]["rankings_flagged"] == 1
    # Least agreement first; p1, where both agreed, is not disputed.
    assert [row["prompt"] for row in data["disputed"]] == [small["p2"].pk, small["p3"].pk]
    votes = {
        (p["a_name"], p["b_name"]): (p["a_votes"], p["b_votes"])
        for p in data["disputed"][1]["pairs"]
    }
    assert votes == {("c0", "c1"): (1.5, 0.5)}
    assert data["unanimous"] == 1
    assert sum(day["count"] for day in data["rate"]) == 8


def test_rushing_and_disagreeing_labelers_stand_out_and_exclusion_removes_them(people, staff):
    dataset = DatasetFactory(labels_per_prompt=3, criteria=[])
    ann, bob, rush = people["ann"], people["bob"], UserFactory(username="rush")
    for _ in range(12):
        prompt = make_prompt(dataset, 3)
        rank(prompt, ann, "c0 > c1 > c2", seconds=30)
        rank(prompt, bob, "c0 > c1 > c2", seconds=40)
        rank(prompt, rush, "c2 > c1 > c0", seconds=2)
    data = report_of(dataset)
    # Per prompt: ann-bob agree on 3 pairs, each against rush on none: 3 of 9.
    assert data["agreement"]["pairwise"]["rate"] == pytest.approx(1 / 3)
    assert row_of(data, "rush")["warnings"] == ["rushing", "disagrees"]
    assert row_of(data, "ann")["warnings"] == []
    assert row_of(data, "rush")["reliability"] < row_of(data, "ann")["reliability"]

    exclusion.exclude_labeler(labeler=rush, by=staff)
    data = report_of(dataset)
    assert data["agreement"]["pairwise"]["rate"] == pytest.approx(1.0)
    assert row_of(data, "rush")["active"] is False
    assert row_of(data, "rush")["agreement"] == pytest.approx(0.0)
    assert row_of(data, "ann")["agreement"] == pytest.approx(1.0)
    assert Ranking.objects.filter(labeler=rush).count() == 12  # nothing deleted


def test_days_without_rankings_are_drawn_as_zero(small):
    old = Ranking.objects.filter(dataset=small["dataset"]).order_by("pk").first()
    Ranking.objects.filter(pk=old.pk).update(created_at=old.created_at - timedelta(days=3))
    rate = report_of(small["dataset"])["rate"]
    assert [day["count"] for day in rate] == [1, 0, 0, 7]


def test_many_prompts_are_resampled_in_bounded_groups(monkeypatch):
    monkeypatch.setattr(report, "BOOTSTRAP_GROUPS", 4)
    assert report.grouped([0, 1, 2]) == [0, 1, 2]
    grouped = report.grouped([0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert grouped[0] == grouped[1]  # a prompt's units stay together
    assert set(grouped) <= {0, 1, 2, 3}
    assert grouped == report.grouped([0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9])  # seeded


def test_report_stays_fresh(small, settings):
    dataset = small["dataset"]
    now = timezone.now()
    report = quality_report.refresh_report(dataset_id=dataset.pk)
    newest = Ranking.objects.order_by("-pk").values_list("pk", flat=True).first()
    assert not quality_report.report_is_stale(report, newest_ranking=newest, now=now)
    # Newer rankings make it stale only once it is older than the refresh period.
    later = now + timedelta(seconds=settings.PREFLAB_QUALITY_REFRESH_SECONDS + 1)
    assert not quality_report.report_is_stale(report, newest_ranking=newest, now=later)
    assert quality_report.report_is_stale(report, newest_ranking=newest + 1, now=later)
    assert not quality_report.report_is_stale(report, newest_ranking=newest + 1, now=now)
    quality_report.invalidate_reports([dataset.pk])
    report.refresh_from_db()
    assert quality_report.report_is_stale(report, newest_ranking=newest, now=now)


def test_changing_what_is_rated_invalidates_the_report(small):
    dataset = small["dataset"]
    quality_report.refresh_report(dataset_id=dataset.pk)
    datasets.update_dataset(dataset=dataset, labels_per_prompt=3)
    assert QualityReport.objects.get(dataset=dataset).invalidated
    data = report_of(dataset)
    assert data["progress"]["done"] == 0 and data["progress"]["partly"] == 4


def test_a_failed_refresh_is_reported_and_tried_again(small, monkeypatch, client, staff):
    dataset = small["dataset"]
    quality_report.refresh_report(dataset_id=dataset.pk)

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(quality_report, "compute_report", broken)
    with pytest.raises(RuntimeError):
        quality_report.refresh_report(dataset_id=dataset.pk)
    report = QualityReport.objects.get(dataset=dataset)
    assert report.error == "RuntimeError: disk full"
    # A big dataset's next refresh waits for the refresh period: no retry storm.
    assert report.refresh_queued_at is not None
    assert not quality_report.request_refresh(dataset=dataset)
    assert report.data["agreement"]["pairwise"]["rate"] == pytest.approx(0.5)  # kept
    client.force_login(staff)
    page = client.get(reverse("labeling:quality", args=[dataset.slug])).content.decode()
    assert "The last computation failed: RuntimeError: disk full" in page
    monkeypatch.undo()
    report = quality_report.refresh_report(dataset_id=dataset.pk)
    assert report is not None and report.error == ""


def test_an_invalidation_while_computing_is_not_lost(small, monkeypatch, staff, people):
    dataset = small["dataset"]
    quality_report.refresh_report(dataset_id=dataset.pk)
    compute = quality_report.compute_report

    def exclude_meanwhile(**kwargs: Any) -> dict[str, Any]:
        data = compute(**kwargs)
        exclusion.exclude_labeler(labeler=people["bob"], by=staff)
        return data

    monkeypatch.setattr(quality_report, "compute_report", exclude_meanwhile)
    report = quality_report.refresh_report(dataset_id=dataset.pk)
    assert report is not None and report.invalidated  # computed before bob's exclusion
    monkeypatch.undo()
    report = quality_report.refresh_report(dataset_id=dataset.pk)
    assert report is not None and not report.invalidated
    assert row_of(report.data, "bob")["active"] is False


@pytest.mark.django_db(transaction=True)
def test_a_big_datasets_report_is_refreshed_by_the_worker(worker, finished, client, settings):
    settings.PREFLAB_QUALITY_INLINE_RANKINGS = 0
    dataset = DatasetFactory(labels_per_prompt=2, criteria=[])
    ann, bob = UserFactory(), UserFactory()
    staff = UserFactory(is_staff=True)
    prompt = make_prompt(dataset, 3)
    rank(prompt, ann, "c0 > c1 > c2")
    rank(prompt, bob, "c0 > c2 > c1")
    client.force_login(staff)
    url = reverse("labeling:quality", args=[dataset.slug])
    page = client.get(url).content.decode()
    assert "being computed" in page
    assert not QualityReport.objects.exists()  # the page wrote and queued nothing
    assert quality_report.refresh_stale_reports() == 1  # the periodic job
    assert finished.wait(60)
    report = QualityReport.objects.get(dataset=dataset)
    assert report.computed_at is not None and report.error == ""
    assert report.data["agreement"]["pairwise"]["rate"] == pytest.approx(2 / 3)
    assert "0.667" in client.get(url).content.decode()
