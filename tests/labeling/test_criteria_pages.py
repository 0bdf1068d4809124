"""Rating criteria on the pages: the ranking page shows each criterion's label, description and
scale ends, gives rank.js the criteria (no keys written into the script), and its form takes
values on each criterion's own scale; the admin edits a dataset's criteria inline."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.conf import settings
from django.urls import reverse

from labeling.forms import shortcuts
from labeling.models import Dataset, Ranking, RatingCriterion, default_workspace_id
from labeling.services import datasets, leasing
from tests.factories import everyone_in_default_workspace, make_prompt

CONCISE = {
    "key": "concise",
    "label": "Concise",
    "description": "No padding, no repetition.",
    "scale_min": 1,
    "scale_max": 5,
    "min_label": "Rambling",
    "max_label": "Tight",
}


@pytest.fixture
def concise(db):
    dataset = datasets.create_dataset(slug="concise", status="active", criteria=[CONCISE])
    dataset.pool_groups.add(everyone_in_default_workspace())
    return dataset


@pytest.fixture
def assignment(concise, labeler):
    make_prompt(concise, completions=2)
    return leasing.lease_next_assignment(dataset=concise, labeler=labeler)


def page_of(client, assignment) -> str:
    client.force_login(assignment.labeler)
    return client.get(reverse("labeling:rank", args=[assignment.pk])).content.decode()


def test_the_page_shows_a_custom_criterions_label_description_and_scale_ends(client, assignment):
    page = page_of(client, assignment)
    assert "Concise" in page and "No padding, no repetition." in page
    assert "(1 Rambling, 5 Tight)" in page
    completion = assignment.display_completions()[0]
    radios = re.findall(rf'name="concise_{completion.pk}" value="(\d+)"', page)
    assert radios == ["1", "2", "3", "4", "5"]
    assert 'name="helpful_' not in page


def test_the_script_gets_the_criteria_from_the_page(client, assignment):
    page = page_of(client, assignment)
    script = re.search(r'<script id="rating-criteria" type="application/json">(.*?)</script>', page)
    assert json.loads(script.group(1)) == [
        {"key": "concise", "label": "Concise", "min": 1, "max": 5, "shortcut": "o"}
    ]
    assert "<kbd>o</kbd> then <kbd>1</kbd>…<kbd>5</kbd>" in page  # the key map
    rank_js = (settings.BASE_DIR / "static" / "labeling" / "rank.js").read_text()
    assert not re.search(r"[\"'](helpful|honest|harmless)[\"']", rank_js)


def test_shortcuts_keep_h_o_a_for_hhh_and_skip_the_pages_own_keys(db):
    hhh = [RatingCriterion(key=key) for key in ("helpful", "honest", "harmless")]
    assert shortcuts(hhh) == {"helpful": "h", "honest": "o", "harmless": "a"}
    own = [RatingCriterion(key=key) for key in ("concise", "safe", "fmt")]
    # c clears, s skips, f flags, m shows raw text, t ties: the next free letter serves, and a
    # criterion left without one is rated with e and digits.
    assert shortcuts(own) == {"concise": "o", "safe": "a"}


def test_the_form_takes_values_on_the_criterions_scale_only(client, assignment):
    client.force_login(assignment.labeler)
    a, b = (c.pk for c in assignment.display_completions())
    data = {
        "request_id": str(uuid.uuid4()),
        "seconds_spent": "3",
        "strength": "better",
        f"rank_{a}": "1",
        f"rank_{b}": "2",
        f"concise_{a}": "5",
        f"concise_{b}": "6",
    }
    url = reverse("labeling:submit", args=[assignment.pk])
    response = client.post(url, data)
    assert response.status_code == 400
    assert "Response B: Rate concise from 1 to 5." in response.content.decode()
    assert client.post(url, data | {f"concise_{b}": "2"}).status_code == 302
    assert Ranking.objects.get().rating_values == {str(a): {"concise": 5}, str(b): {"concise": 2}}


# --- The admin -------------------------------------------------------------------------------


def inline(prefix: str, rows: list[dict], initial: int = 0) -> dict[str, str]:
    data = {
        f"{prefix}-TOTAL_FORMS": str(len(rows)),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for index, row in enumerate(rows):
        data |= {f"{prefix}-{index}-{name}": str(value) for name, value in row.items()}
    return data


DATASET_FORM = {
    "name": "Admin made",
    "slug": "admin-made",
    "ratings": "required",
    "strength": "required",
    "labels_per_prompt": "2",
    "gold_rate": "0",
    "order": "fixed",
    "uncertainty_share": "0.5",
    "status": "draft",
}


def test_the_admin_edits_a_datasets_criteria_inline(client, staff, concise):
    client.force_login(staff)
    url = reverse("admin:labeling_dataset_change", args=[concise.pk])
    page = client.get(url).content.decode()
    assert 'name="criteria-0-key" value="concise"' in page
    criterion = concise.criteria.get()
    rows = [
        {"id": criterion.pk, "dataset": concise.pk, "position": 0} | CONCISE | {"label": "Brief"},
        {"dataset": concise.pk, "position": 1, "key": "kind", "label": "Kind"}
        | {"scale_min": 0, "scale_max": 10},
    ]
    form = DATASET_FORM | {"name": concise.name, "slug": concise.slug, "status": "active"}
    response = client.post(url, form | inline("criteria", rows, initial=1))
    assert response.status_code == 302, response.context["errors"] if response.context else ""
    assert list(concise.criteria.values_list("key", "label", "scale_max")) == [
        ("concise", "Brief", 5),
        ("kind", "Kind", 10),
    ]


def test_a_dataset_added_in_the_admin_without_criteria_gets_the_defaults(client, staff):
    client.force_login(staff)
    response = client.post(
        reverse("admin:labeling_dataset_add"),
        DATASET_FORM | {"workspace": default_workspace_id()} | inline("criteria", []),
    )
    assert response.status_code == 302
    dataset = Dataset.objects.get(slug="admin-made")
    assert dataset.criterion_keys == ["helpful", "honest", "harmless"]


def test_the_admin_refuses_to_delete_a_rated_criterion(client, staff, concise, assignment):
    a, b = (c.pk for c in assignment.display_completions())
    client.force_login(assignment.labeler)
    submitted = {"request_id": str(uuid.uuid4()), "seconds_spent": "3", "strength": "better"}
    submitted |= {f"rank_{a}": "1", f"rank_{b}": "2", f"concise_{a}": "4", f"concise_{b}": "2"}
    assert (
        client.post(reverse("labeling:submit", args=[assignment.pk]), submitted).status_code == 302
    )
    client.force_login(staff)
    criterion = concise.criteria.get()
    row = {"id": criterion.pk, "dataset": concise.pk, "position": 0, "DELETE": "on"} | CONCISE
    form = DATASET_FORM | {"name": concise.name, "slug": concise.slug, "status": "active"}
    url = reverse("admin:labeling_dataset_change", args=[concise.pk])
    response = client.post(url, form | inline("criteria", [row], initial=1))
    assert response.status_code == 200  # the form again, with the refusal
    assert "would require deleting the following protected related objects" in (
        response.content.decode()
    )
    assert concise.criteria.exists()
