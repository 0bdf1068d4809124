"""What any client may send is bounded, and an error says which bound, as JSON: never a 500."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse

from labeling.exports import accepts_gzip
from labeling.services import leasing
from tests.factories import token_client


@pytest.fixture
def task(dataset, prompt, labeler):
    return leasing.lease_next_assignment(dataset=dataset, labeler=labeler)


def test_deeply_nested_json_is_a_400_on_a_labelers_own_endpoint(labeler, task):
    url = reverse("labeling-api:ranking", args=[task.pk])
    client = token_client(labeler)
    for body in ("[" * 100_000, '{"order": ' + "[" * 40 + "]" * 40 + "}"):
        response = client.post(url, body, content_type="application/json")
        assert response.status_code == 400
        assert "JSON parse error: nested" in response.json()["detail"]


def test_a_body_over_the_limit_is_a_json_413(staff, settings):
    settings.PREFLAB_API_MAX_JSON_BYTES = 100
    response = token_client(staff).post(
        reverse("labeling-api:datasets"), {"slug": "x" * 200, "name": "n"}, format="json"
    )
    assert response.status_code == 413
    assert "larger than 100 bytes" in response.json()["detail"]


def test_a_refused_ranking_names_a_few_ids_not_the_whole_input(labeler, task):
    ids = list(task.prompt.completions.values_list("pk", flat=True))
    body = {
        "order": [[ids[0]], [ids[1]], [ids[2], *range(10**6, 10**6 + 50_000)]],
        "request_id": str(uuid.uuid4()),
        "seconds_spent": 3,
    }
    url = reverse("labeling-api:ranking", args=[task.pk])
    response = token_client(labeler).post(url, body, format="json")
    assert response.status_code == 400
    message = response.json()["order"][0]
    assert "not in this prompt [1000000, 1000001, 1000002, 1000003, 1000004, ..." in message
    assert "and 49995 more]" in message and len(message) < 200


@pytest.mark.parametrize(
    ("header", "gzip"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0, identity", False),
        ("deflate", False),
        ("*", True),
        ("*;q=0, gzip;q=0.5", True),
        ("gzip;q=oops", False),
        ("", False),
    ],
)
def test_gzip_follows_the_q_values(header, gzip):
    assert accepts_gzip(header) is gzip


def test_export_with_gzip_q0_is_plain(staff, dataset):
    response = token_client(staff).get(
        reverse("labeling-api:comparisons", args=[dataset.slug]), HTTP_ACCEPT_ENCODING="gzip;q=0"
    )
    assert response.status_code == 200 and "Content-Encoding" not in response


def test_a_cursor_beyond_the_newest_row_is_refused(staff, dataset):
    response = token_client(staff).get(
        reverse("labeling-api:comparisons", args=[dataset.slug]), {"since": 10**9}
    )
    assert response.status_code == 400
    assert "beyond the newest row of this export (0)" in response.json()["since"][0]


def test_a_charset_python_cannot_decode_is_a_400(labeler, task):
    client = token_client(labeler)
    response = client.post(
        reverse("labeling-api:skip", args=[task.pk]),
        b'{"reason": "\xff"}',
        content_type="application/json",
    )
    assert response.status_code == 400
    response = client.post(
        reverse("labeling-api:skip", args=[task.pk]),
        '{"reason": "unsure"}',
        content_type="application/json; charset=rot13",
    )
    assert response.status_code == 200  # JSON is UTF-8 whatever the header says
    response = client.post(
        reverse("labeling-api:skip", args=[task.pk]),
        '{"reason": "unsure"}',
        content_type="application/json",
    )
    assert response.status_code == 400  # skipped already


def test_form_encoded_bodies_are_not_taken(labeler, task):
    body = "reason=" + "x" * (3 * 1024**2)
    response = token_client(labeler).post(
        reverse("labeling-api:skip", args=[task.pk]),
        body,
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 415
