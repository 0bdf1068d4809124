"""The model leaderboard: battles counted from comparisons and ties, the page and the API."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import pytest
from django.urls import reverse

from labeling import tasks
from labeling.models import Asked, Dataset, ModelLeaderboard, Role
from labeling.services import exclusion, leaderboard, rankings
from tests.factories import (
    CompletionFactory,
    DatasetFactory,
    PromptFactory,
    UserFactory,
    make_lease,
    token_client,
)


def unrated_dataset(**fields: Any) -> Dataset:
    return DatasetFactory(ratings=Asked.OFF, strength=Asked.OFF, labels_per_prompt=5, **fields)


def ranked(dataset: Dataset, models: list[str], order: list[list[int]], labeler: Any, **prompt):
    """A prompt whose completions come from `models` (in that order), ranked by `labeler` as
    `order`, tie groups of positions in `models`."""
    prompt_row = PromptFactory(dataset=dataset, **prompt)
    completions = [
        CompletionFactory(prompt=prompt_row, position=i, external_id=f"c{i}", model_name=name)
        for i, name in enumerate(models)
    ]
    assignment = make_lease(prompt_row, labeler)
    rankings.submit_ranking(
        assignment=assignment,
        order=[[completions[i].pk for i in group] for group in order],
        ratings={},
        flags={},
        request_id=uuid.uuid4(),
        seconds_spent=3.0,
    )
    return prompt_row


def matrix(battles: leaderboard.Battles, kind: str) -> dict[tuple[str, str], int]:
    names = battles["names"]
    return {
        (names[i], names[j]): n
        for i, row in enumerate(battles[kind])  # type: ignore[literal-required]
        for j, n in enumerate(row)
        if n
    }


@pytest.fixture
def arena(db: None) -> dict[str, Any]:
    """Three prompts ranked by two labelers: `big` beats `small` four times, ties once with it
    and once with `mid`; `mid` beats `small` twice."""
    dataset = unrated_dataset(slug="arena")
    ann, bob = UserFactory(), UserFactory()
    ranked(dataset, ["big", "small"], [[0], [1]], ann)
    ranked(dataset, ["big", "mid", "small"], [[0, 1], [2]], ann)  # big = mid > small
    ranked(dataset, ["big", "small", "mid"], [[0], [1, 2]], bob)  # big > small = mid
    ranked(dataset, ["small", "big"], [[0, 1]], bob)  # a tie
    return {"dataset": dataset, "ann": ann, "bob": bob}


def test_comparisons_are_wins_and_ties_count_both_ways(arena):
    battles = leaderboard.count_battles(dataset_ids=[arena["dataset"].pk])
    assert battles["names"] == ["big", "mid", "small"]
    assert matrix(battles, "wins") == {
        ("big", "small"): 3,
        ("big", "mid"): 1,
        ("mid", "small"): 1,
    }
    assert matrix(battles, "ties") == {
        ("big", "mid"): 1,
        ("mid", "big"): 1,
        ("mid", "small"): 1,
        ("small", "mid"): 1,
        ("big", "small"): 1,
        ("small", "big"): 1,
    }
    assert battles["left_out"] == {"unnamed": 0, "same_model": 0}


def test_same_model_pairs_and_unnamed_completions_are_left_out_and_counted(arena):
    dataset, ann = arena["dataset"], arena["ann"]
    ranked(dataset, ["big", "big", "small"], [[0], [1], [2]], ann)  # big > big: left out
    ranked(dataset, ["", "small", "big"], [[0, 1], [2]], ann)  # "" = small > "": left out
    battles = leaderboard.count_battles(dataset_ids=[dataset.pk])
    assert battles["left_out"] == {"unnamed": 2, "same_model": 1}
    assert matrix(battles, "wins")["big", "small"] == 5
    assert matrix(battles, "wins")["small", "big"] == 1
    assert "" not in battles["names"]


def test_excluded_labelers_and_gold_prompts_do_not_count(arena):
    dataset, bob = arena["dataset"], arena["bob"]
    ranked(dataset, ["mid", "big"], [[0], [1]], arena["ann"], is_gold=True, gold_order=[["c0"]])
    bob.is_active = False
    bob.save()
    battles = leaderboard.count_battles(dataset_ids=[dataset.pk])
    assert matrix(battles, "wins") == {("big", "small"): 2, ("mid", "small"): 1}
    assert matrix(battles, "ties") == {("big", "mid"): 1, ("mid", "big"): 1}


def test_datasets_are_pooled_and_others_left_alone(arena):
    other = unrated_dataset(slug="other")
    ranked(other, ["small", "big"], [[0], [1]], arena["ann"])
    unrated = unrated_dataset(slug="unrelated")
    ranked(unrated, ["small", "big"], [[0], [1]], arena["ann"])
    pooled = leaderboard.parse_datasets(slug="arena", extra="other, arena")
    assert [d.slug for d in pooled] == ["arena", "other"]
    battles = leaderboard.count_battles(dataset_ids=[d.pk for d in pooled])
    assert matrix(battles, "wins")["small", "big"] == 1


def test_the_leaderboard_orders_the_models(arena):
    data = leaderboard.compute_leaderboard(datasets=[arena["dataset"]], rounds=100)
    board = data["standings"]
    assert [row["model"] for row in board["models"]] == ["big", "mid", "small"]
    big = board["models"][0]
    assert (big["wins"], big["losses"], big["ties"], big["comparisons"]) == (4, 0, 2, 6)
    assert board["battles"] == 8
    assert data["datasets"] == ["arena"]


def test_unknown_or_too_many_datasets_are_refused(arena, settings):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="No dataset 'nope'"):
        leaderboard.parse_datasets(slug="arena", extra="nope")
    settings.PREFLAB_LEADERBOARD_MAX_DATASETS = 2
    with pytest.raises(ValidationError, match="At most 2 datasets"):
        leaderboard.parse_datasets(slug="arena", extra="a,b")


# --- API ---------------------------------------------------------------------------------------


def api_url(slug: str = "arena") -> str:
    return reverse("labeling-api:leaderboard", args=[slug])


def service_account() -> Any:
    return UserFactory(role=Role.SERVICE)


def test_service_token_reads_the_leaderboard_as_json(arena):
    response = token_client(service_account()).get(api_url(), {"rounds": 100})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    board = body["leaderboard"]
    assert [row["model"] for row in board["standings"]["models"]] == ["big", "mid", "small"]
    assert board["standings"]["rounds"] == 100
    assert board["left_out"] == {"unnamed": 0, "same_model": 0}
    first_row = board["standings"]["win_rates"][0]
    assert first_row[0] == {"share": None, "battles": 0}
    assert first_row[2] == {"share": 3.5 / 4, "battles": 4}  # big over small


def test_labeler_and_anonymous_cannot_read_the_leaderboard(arena):
    assert token_client(arena["ann"]).get(api_url()).status_code == 403
    assert token_client(None).get(api_url()).status_code == 401


def test_csv_has_a_row_per_model_best_first(arena, staff):
    response = token_client(staff).get(api_url(), {"format": "csv", "rounds": 100})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="arena-leaderboard.csv"' in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == [
        "rank",
        "model",
        "score",
        "low",
        "high",
        "comparisons",
        "wins",
        "losses",
        "ties",
    ]
    assert [row[1] for row in rows[1:]] == ["big", "mid", "small"]
    assert rows[1][5:] == ["6", "4", "0", "2"]


def test_csv_cells_cannot_start_a_spreadsheet_formula(staff):
    dataset = unrated_dataset(slug="formula")
    ranked(dataset, ["=HYPERLINK(1)", "plain"], [[0], [1]], UserFactory())
    response = token_client(staff).get(api_url("formula"), {"format": "csv", "rounds": 100})
    names = [row[1] for row in csv.reader(io.StringIO(response.content.decode()))][1:]
    assert names == ["'=HYPERLINK(1)", "plain"]


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"datasets": "nope"}, "datasets", "No dataset 'nope'"),
        ({"datasets": ",".join(f"d{i}" for i in range(30))}, "datasets", "At most 20"),
        ({"datasets": "x" * 3000}, "datasets", "At most 2000 characters"),
        ({"rounds": "5"}, "rounds", "from 100 to 5000"),
        ({"rounds": "100000"}, "rounds", "from 100 to 5000"),
        ({"rounds": "many"}, "rounds", "from 100 to 5000"),
        ({"format": "xml"}, "format", 'Unknown format "xml"'),
    ],
)
def test_bad_parameters_are_a_400_naming_the_parameter(arena, staff, query, field, message):
    response = token_client(staff).get(api_url(), query)
    assert response.status_code == 400
    assert message in " ".join(response.json()[field])


def test_unknown_dataset_in_the_address_is_a_404(staff, db):
    assert token_client(staff).get(api_url("missing")).status_code == 404


def test_queries_do_not_grow_with_comparisons(staff, django_assert_max_num_queries):
    dataset = unrated_dataset(slug="grows")
    labeler = UserFactory()
    client = token_client(staff)

    def queries() -> int:
        with django_assert_max_num_queries(20) as captured:
            assert client.get(api_url("grows"), {"rounds": 100}).status_code == 200
        return len(captured)

    ranked(dataset, ["a", "b", "c"], [[0], [1, 2]], labeler)
    few = queries()
    for _ in range(6):
        ranked(dataset, ["a", "b", "c", "d"], [[3], [0, 1], [2]], labeler)
    assert queries() == few


# --- Page --------------------------------------------------------------------------------------


def page_url(slug: str = "arena") -> str:
    return reverse("labeling:leaderboard", args=[slug])


def test_staff_page_shows_plot_table_and_win_rates(client, staff, arena):
    other = unrated_dataset(slug="other", name="Other set")
    ranked(other, ["<b>bold</b>", "big"], [[0], [1]], arena["ann"])
    client.force_login(staff)
    response = client.get(page_url(), {"datasets": "other", "rounds": 200})
    page = response.content.decode()
    assert response.status_code == 200
    assert "<svg" in page and "Model scores with 95% bootstrap intervals" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page
    assert "arena, other" in page
    assert 'value="other" checked' in page
    assert "Win rates" in page and 'title="4 battles"' in page
    assert "format=csv" in page


def test_page_refuses_bad_choices_with_a_400(client, staff, arena):
    client.force_login(staff)
    response = client.get(page_url(), {"datasets": "nope", "rounds": 3})
    page = response.content.decode()
    assert response.status_code == 400
    assert "No dataset &#x27;nope&#x27;" in page
    assert "<svg" not in page


def test_quality_dashboard_links_the_leaderboard(client, staff, arena):
    client.force_login(staff)
    page = client.get(reverse("labeling:quality", args=["arena"])).content.decode()
    assert page_url() in page


def test_page_queries_do_not_grow_with_comparisons(client, staff, django_assert_max_num_queries):
    dataset = unrated_dataset(slug="grows")
    labeler = UserFactory()
    client.force_login(staff)

    def queries() -> int:
        with django_assert_max_num_queries(30) as captured:
            assert client.get(page_url("grows"), {"rounds": 100}).status_code == 200
        return len(captured)

    ranked(dataset, ["a", "b"], [[0], [1]], labeler)
    few = queries()
    for _ in range(6):
        ranked(dataset, ["a", "b", "c"], [[2], [0, 1]], labeler)
    assert queries() == few


# --- Computed by a worker ----------------------------------------------------------------------


@pytest.fixture
def big(settings: Any, arena: dict[str, Any]) -> dict[str, Any]:
    """The arena, counted as too big to compute in a request."""
    settings.PREFLAB_LEADERBOARD_INLINE_RANKINGS = 0
    return arena


def test_a_big_leaderboard_is_computed_by_a_worker_then_read(
    big, staff, django_capture_on_commit_callbacks
):
    client = token_client(staff)
    with django_capture_on_commit_callbacks() as queued:
        first = client.get(api_url(), {"rounds": 100}).json()
    assert first["status"] == "computing" and first["leaderboard"] is None
    assert len(queued) == 1
    with django_capture_on_commit_callbacks() as again:
        csv_response = client.get(api_url(), {"rounds": 100, "format": "csv"})
    assert not again  # claimed once per refresh period
    assert csv_response.status_code == 503 and csv_response["Retry-After"] == "5"
    stored = ModelLeaderboard.objects.get()
    tasks.refresh_leaderboard(stored.pk)  # what the worker runs
    with django_capture_on_commit_callbacks() as none:
        ready = client.get(api_url(), {"rounds": 100}).json()
    assert not none
    assert ready["status"] == "ready"
    assert [row["model"] for row in ready["leaderboard"]["standings"]["models"]] == [
        "big",
        "mid",
        "small",
    ]
    assert client.get(api_url(), {"rounds": 100, "format": "csv"}).status_code == 200


def test_newer_rankings_refresh_it_after_the_period_showing_the_last_meanwhile(big, settings):
    from datetime import timedelta

    from django.utils import timezone

    dataset = big["dataset"]
    stored = ModelLeaderboard.objects.get(pk=request_and_compute(dataset))
    ranked(dataset, ["mid", "big"], [[0], [1]], UserFactory())
    soon = stored.computed_at + timedelta(seconds=settings.PREFLAB_QUALITY_REFRESH_SECONDS - 1)
    shown, refreshing = leaderboard.current_leaderboard(datasets=[dataset], rounds=100, now=soon)
    assert (shown, refreshing) == (stored, False)
    later = timezone.now() + timedelta(seconds=settings.PREFLAB_QUALITY_REFRESH_SECONDS)
    shown, refreshing = leaderboard.current_leaderboard(datasets=[dataset], rounds=100, now=later)
    assert shown == stored and refreshing
    assert shown is not None and shown.data["standings"]["battles"] == 8


def request_and_compute(dataset: Dataset) -> int:
    leaderboard.request_refresh(datasets=[dataset], rounds=100)
    stored = ModelLeaderboard.objects.get(key=leaderboard.leaderboard_key([dataset], 100))
    leaderboard.refresh_leaderboard(leaderboard_id=stored.pk)
    return stored.pk


def test_an_exclusion_makes_the_leaderboards_of_its_datasets_stale_at_once(big, staff):
    dataset = big["dataset"]
    request_and_compute(dataset)
    shown, refreshing = leaderboard.current_leaderboard(datasets=[dataset], rounds=100)
    assert not refreshing
    exclusion.exclude_labeler(labeler=big["bob"], by=staff)
    shown, refreshing = leaderboard.current_leaderboard(datasets=[dataset], rounds=100)
    assert refreshing
    stored = leaderboard.refresh_leaderboard(leaderboard_id=shown.pk)
    assert stored is not None and stored.data["standings"]["battles"] == 4  # ann's only


def test_pooled_datasets_share_one_row_in_any_order(big):
    other = unrated_dataset(slug="other")
    first = leaderboard.leaderboard_key([big["dataset"], other], 100)
    assert first == leaderboard.leaderboard_key([other, big["dataset"]], 100)
    assert first != leaderboard.leaderboard_key([other, big["dataset"]], 200)


def test_a_leaderboard_of_a_deleted_dataset_is_dropped_quietly(big):
    other = unrated_dataset(slug="other")
    leaderboard.request_refresh(datasets=[big["dataset"], other], rounds=100)
    stored = ModelLeaderboard.objects.get()
    other.delete()
    assert leaderboard.refresh_leaderboard(leaderboard_id=stored.pk) is None
    assert not ModelLeaderboard.objects.exists()
    assert leaderboard.refresh_leaderboard(leaderboard_id=stored.pk) is None


def test_a_failed_computation_is_stored_and_raised(big, monkeypatch):
    leaderboard.request_refresh(datasets=[big["dataset"]], rounds=100)
    stored = ModelLeaderboard.objects.get()

    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("out of luck")

    monkeypatch.setattr(leaderboard, "compute_leaderboard", broken)
    with pytest.raises(RuntimeError):
        leaderboard.refresh_leaderboard(leaderboard_id=stored.pk)
    stored.refresh_from_db()
    assert stored.error == "RuntimeError: out of luck" and stored.computed_at is None


def test_page_shows_computing_then_the_stored_leaderboard(client, staff, big):
    client.force_login(staff)
    waiting = client.get(page_url(), {"rounds": 100}).content.decode()
    assert "being computed" in waiting and 'http-equiv="refresh"' in waiting
    leaderboard.refresh_leaderboard(leaderboard_id=ModelLeaderboard.objects.get().pk)
    page = client.get(page_url(), {"rounds": 100}).content.decode()
    assert "being computed" not in page and 'http-equiv="refresh"' not in page
    assert "<svg" in page and "Computed " in page
