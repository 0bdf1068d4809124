"""Rating criteria through the REST API: a dataset's criteria as objects, made and changed with
the dataset, errors naming the field and index, and a labeler's task and submit using them."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse

from labeling.models import Dataset, Rating
from tests.factories import everyone_in_default_workspace, make_prompt, token_client

CONCISE = {
    "key": "concise",
    "label": "Concise",
    "description": "No padding.",
    "scale_min": 1,
    "scale_max": 5,
    "min_label": "Rambling",
    "max_label": "Tight",
}


@pytest.fixture
def staff_api(staff):
    return token_client(staff)


def create(client, **fields):
    body = {"slug": "custom", "name": "Custom", "status": "active"} | fields
    return client.post(reverse("labeling-api:datasets"), body, format="json")


def test_a_dataset_made_with_its_own_criteria_lists_them_as_objects(staff_api):
    response = create(staff_api, criteria=[CONCISE, {"key": "kind"}])
    assert response.status_code == 201, response.json()
    assert response.json()["criteria"] == [
        CONCISE,
        {
            "key": "kind",
            "label": "Kind",
            "description": "",
            "scale_min": 1,
            "scale_max": 7,
            "min_label": "",
            "max_label": "",
        },
    ]
    detail = staff_api.get(reverse("labeling-api:dataset", args=["custom"])).json()
    assert [c["key"] for c in detail["criteria"]] == ["concise", "kind"]


def test_a_dataset_made_without_criteria_gets_the_defaults(staff_api):
    body = create(staff_api).json()
    assert [(c["key"], c["scale_min"], c["scale_max"]) for c in body["criteria"]] == [
        ("helpful", 1, 7),
        ("honest", 1, 7),
        ("harmless", 1, 7),
    ]


@pytest.mark.parametrize(
    ("criteria", "index", "field"),
    [
        ([CONCISE, CONCISE | {"key": "not a slug"}], 1, "key"),
        ([CONCISE | {"scale_max": 11}], 0, "scale_max"),
        ([{"key": "kind"}, CONCISE | {"scale_min": 5}], 1, "scale_max"),
    ],
)
def test_bad_criteria_are_refused_naming_field_and_index(staff_api, criteria, index, field):
    response = create(staff_api, criteria=criteria)
    assert response.status_code == 400
    assert set(response.json()["criteria"]) == {str(index)}  # errors by index, then field
    assert set(response.json()["criteria"][str(index)]) == {field}
    assert not Dataset.objects.exists()


def test_repeated_keys_are_refused_naming_the_index(staff_api):
    response = create(staff_api, criteria=[CONCISE, CONCISE])
    assert response.status_code == 400
    assert response.json() == {"criteria": ["criteria[1].key: 'concise' appears twice."]}


def test_patching_criteria_replaces_them_in_the_order_given(staff_api, dataset):
    url = reverse("labeling-api:dataset", args=[dataset.slug])
    response = staff_api.patch(url, {"criteria": [CONCISE, {"key": "helpful"}]}, format="json")
    assert response.status_code == 200, response.json()
    assert [c["key"] for c in response.json()["criteria"]] == ["concise", "helpful"]
    assert list(dataset.criteria.values_list("key", flat=True)) == ["concise", "helpful"]


def test_a_labeler_rates_a_custom_criterion_through_the_api(staff_api, labeler):
    create(staff_api, criteria=[CONCISE])
    custom = Dataset.objects.get(slug="custom")
    custom.pool_groups.add(everyone_in_default_workspace())
    make_prompt(custom, completions=2)
    client = token_client(labeler)
    task = client.post(reverse("labeling-api:next-task", args=["custom"])).json()
    assert task["criteria"] == [CONCISE]
    ids = [c["id"] for c in task["completions"]]
    url = reverse("labeling-api:ranking", args=[task["assignment"]])
    body = {
        "order": [[ids[0]], [ids[1]]],
        "ratings": {str(ids[0]): {"concise": 5}, str(ids[1]): {"concise": 6}},
        "request_id": str(uuid.uuid4()),
        "seconds_spent": 3,
        "strength": "better",
    }
    refused = client.post(url, body, format="json")
    assert refused.status_code == 400
    assert refused.json() == {
        "ratings": [f"Completion {ids[1]}: concise must be a whole number from 1 to 5."]
    }
    body["ratings"][str(ids[1])] = {"concise": 2}
    response = client.post(url, body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["ratings"] == {str(ids[0]): {"concise": 5}, str(ids[1]): {"concise": 2}}
    assert Rating.objects.count() == 2
    unknown = body | {"ratings": {str(ids[0]): {"helpful": 5}}, "request_id": str(uuid.uuid4())}
    assert client.post(url, unknown, format="json").status_code == 400  # already submitted too


def test_the_dataset_list_reads_criteria_in_one_query(staff_api, django_assert_max_num_queries):
    for index in range(3):
        create(staff_api, slug=f"d{index}", criteria=[CONCISE])
    with django_assert_max_num_queries(4):  # the token, the datasets, their criteria
        body = staff_api.get(reverse("labeling-api:datasets")).json()
    assert [len(dataset["criteria"]) for dataset in body] == [1, 1, 1]
