"""AI labelers' rankings are kept apart from the humans': the default exports, the agreement
statistics, dataset progress and label slots leave them out; `labelers=ai|all` asks for them."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from labeling.models import Comparison, Dataset, Prompt, Ranking
from labeling.services import slots
from tests.factories import (
    AILabelerFactory,
    DatasetFactory,
    make_ai_ranking,
    make_prompt,
    token_client,
)
from tests.labeling.quality_data import lines, rank, report_of


def ids_of(prompt: Prompt) -> dict[str, int]:
    return dict(prompt.completions.values_list("external_id", "pk"))


@pytest.fixture
def mixed(people: dict[str, Any]) -> dict[str, Any]:
    """Two prompts ranked by ann (c0 > c1) and by an AI labeler (c1 > c0)."""
    dataset = DatasetFactory(labels_per_prompt=2, criteria=[])
    judge = AILabelerFactory(dataset=dataset)
    prompts = [make_prompt(dataset, 2) for _ in range(2)]
    for prompt in prompts:
        rank(prompt, people["ann"], "c0 > c1")
        ids = ids_of(prompt)
        make_ai_ranking(judge, prompt, [[ids["c1"]], [ids["c0"]]])
    return {"dataset": dataset, "judge": judge, "prompts": prompts, "ann": people["ann"]}


@pytest.fixture
def client(staff: Any) -> Any:
    return token_client(staff)


def pull(client: Any, dataset: Dataset, endpoint: str = "comparisons", **params: Any) -> Any:
    url = reverse(f"labeling-api:{endpoint}", args=[dataset.slug])
    return client.get(url, {"include_ids": "true", **params})


def comparison_ids(rows: list[dict[str, Any]]) -> set[int]:
    return {row["ids"]["comparison"] for row in rows}


def test_default_exports_leave_ai_labelers_out(mixed, client):
    dataset, judge = mixed["dataset"], mixed["judge"]
    human = set(Comparison.objects.filter(labeler=mixed["ann"]).values_list("pk", flat=True))
    machine = set(Comparison.objects.filter(labeler=judge.user).values_list("pk", flat=True))
    assert len(human) == len(machine) == 2
    assert comparison_ids(lines(pull(client, dataset))) == human
    assert comparison_ids(lines(pull(client, dataset, labelers="human"))) == human
    assert comparison_ids(lines(pull(client, dataset, labelers="ai"))) == machine
    assert comparison_ids(lines(pull(client, dataset, labelers="all"))) == human | machine
    # The pair formats keep their fields exactly: no labeler kind is added to them.
    for row in lines(pull(client, dataset, labelers="all", include_ids="false")):
        assert set(row) == {"prompt", "chosen", "rejected"}


@pytest.mark.parametrize("endpoint", ["comparisons", "rankings"])
def test_a_bad_labelers_value_is_a_400_naming_the_choices(mixed, client, endpoint):
    response = pull(client, mixed["dataset"], endpoint, labelers="robots")
    assert response.status_code == 400
    assert "human, ai, all" in response.json()["labelers"][0]


def test_the_schema_documents_labelers_on_both_exports(db):
    from drf_spectacular.generators import SchemaGenerator

    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    for endpoint in ("comparisons", "rankings"):
        (parameter,) = [
            parameter
            for parameter in paths[f"/api/v1/datasets/{{slug}}/{endpoint}/"]["get"]["parameters"]
            if parameter["name"] == "labelers"
        ]
        assert parameter["schema"]["enum"] == ["human", "ai", "all"]
        assert parameter["schema"]["default"] == "human"


def test_rankings_export_says_which_labeler_is_an_ai(mixed, client):
    dataset = mixed["dataset"]
    assert {row["labeler_kind"] for row in lines(pull(client, dataset, "rankings"))} == {"human"}
    rows = lines(pull(client, dataset, "rankings", labelers="all"))
    kinds = {row["ids"]["ranking"]: row["labeler_kind"] for row in rows}
    assert kinds == {
        ranking.pk: "ai" if ranking.labeler_id == mixed["judge"].user_id else "human"
        for ranking in Ranking.objects.filter(dataset=dataset)
    }
    assert {
        row["labeler_kind"] for row in lines(pull(client, dataset, "rankings", labelers="ai"))
    } == {"ai"}


def test_vote_shares_and_consensus_count_the_labelers_asked_for(mixed, client):
    dataset = mixed["dataset"]
    shares = lines(pull(client, dataset, include="agreement"))
    assert {(row["agreement"], row["voters"]) for row in shares} == {(1.0, 1)}
    both = lines(pull(client, dataset, include="agreement", labelers="all"))
    assert {(row["agreement"], row["voters"]) for row in both} == {(0.5, 2)}
    assert len(lines(pull(client, dataset, min_agreement="0.6", labelers="all"))) == 0
    consensus = lines(pull(client, dataset, consensus="true", labelers="ai"))
    assert {
        (row["ids"]["chosen_external"], row["ids"]["rejected_external"]) for row in consensus
    } == {("c1", "c0")}
    assert len(consensus) == 2


def test_adjudicated_pulls_refuse_labelers_other_than_human(mixed, client):
    response = pull(client, mixed["dataset"], adjudicated="true", labelers="ai")
    assert response.status_code == 400
    assert "labelers" in response.json()


def test_exported_passes_labelers_to_the_rows_that_count(mixed):
    rows = Comparison.objects.filter(dataset=mixed["dataset"])
    cursor = rows.order_by("-pk").values_list("pk", flat=True)[0]
    judge_user = mixed["judge"].user_id
    assert judge_user not in set(rows.exported(cursor=cursor).values_list("labeler_id", flat=True))
    assert set(
        rows.exported(cursor=cursor, labelers="ai").values_list("labeler_id", flat=True)
    ) == {judge_user}
    assert rows.exported(cursor=cursor, labelers="all").count() == 4


def test_ai_rankings_leave_human_statistics_progress_and_slots_alone(small):
    dataset = small["dataset"]
    before = report_of(dataset)
    progress = Dataset.objects.with_progress().get(pk=dataset.pk)
    taken = dict(Prompt.objects.filter(dataset=dataset).values_list("pk", "slots_taken"))
    judge = AILabelerFactory(dataset=dataset)
    for name in ("p1", "p2", "p3", "p4", "p5", "gold"):
        ids = sorted(ids_of(small[name]).values(), reverse=True)  # against ann on every pair
        make_ai_ranking(judge, small[name], [[cid] for cid in ids], seconds=0.5)
    slots.recount_slots(list(taken))
    after = report_of(dataset)
    for key in before.keys() - {"cursor", "ai_labelers"}:
        assert after[key] == before[key], key
    assert [row["name"] for row in after["ai_labelers"]] == [judge.name]
    assert judge.user_id not in {row["id"] for row in after["labelers"]}
    assert dict(Prompt.objects.filter(dataset=dataset).values_list("pk", "slots_taken")) == taken
    again = Dataset.objects.with_progress().get(pk=dataset.pk)
    assert (again.prompt_count, again.label_count) == (progress.prompt_count, progress.label_count)


def test_parquet_pulls_take_labelers_too(mixed, client):
    import io

    import pyarrow.parquet as pq

    def rows(**params: Any) -> list[dict[str, Any]]:
        response = pull(client, mixed["dataset"], output="parquet", **params)
        assert response.status_code == 200
        return pq.read_table(io.BytesIO(b"".join(response.streaming_content))).to_pylist()

    judge_comparisons = set(
        Comparison.objects.filter(labeler=mixed["judge"].user).values_list("pk", flat=True)
    )
    assert {row["ids"]["comparison"] for row in rows(labelers="ai")} == judge_comparisons
    assert not judge_comparisons & {row["ids"]["comparison"] for row in rows()}
    assert len(rows(labelers="all")) == 4
