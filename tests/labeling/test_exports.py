"""Streamed exports: every format, the filters, the cursor, gzip, and the row builders."""

from __future__ import annotations

import gzip
import io
import json
import threading
import uuid

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling import exports, pair_reads
from labeling.accounts import pseudonym
from labeling.models import Comparison, Dataset, Ranking
from labeling.services import leasing, rankings
from labeling.services.workspaces import change_pool
from tests.factories import (
    DatasetFactory,
    PromptFactory,
    UserFactory,
    make_lease,
    make_prompt,
)

CONVERSATION = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Name a color."},
]


def test_row_builders_on_plain_values():
    single = [{"role": "user", "content": "2+2?"}]
    assert exports.comparison_row("trl", single, "4", "5") == {
        "prompt": "2+2?",
        "chosen": "4",
        "rejected": "5",
    }
    assert exports.comparison_row("trl-conversational", CONVERSATION, "Red", "No") == {
        "prompt": CONVERSATION,
        "chosen": [{"role": "assistant", "content": "Red"}],
        "rejected": [{"role": "assistant", "content": "No"}],
    }
    assert exports.comparison_row("hh", CONVERSATION, "Red", "No") == {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a color.\n\nAssistant: Red",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a color.\n\nAssistant: No",
    }
    assert exports.comparison_row("openai", single, "4", "5") == {
        "input": {"messages": single},
        "preferred_output": [{"role": "assistant", "content": "4"}],
        "non_preferred_output": [{"role": "assistant", "content": "5"}],
    }
    text = exports.trl_text_row(CONVERSATION, "Red", "No")
    assert (
        text["prompt"] + text["chosen"]
        == exports.comparison_row("hh", CONVERSATION, "Red", "No")["chosen"]
    )


def test_gzipped_stream_decompresses_to_the_same_bytes():
    chunks = [b'{"a": 1}\n', b'{"b": 2}\n' * 1000]
    assert gzip.decompress(b"".join(exports.gzipped(chunks))) == b"".join(chunks)


# --- Through the API -------------------------------------------------------------------------


@pytest.fixture
def client(staff):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff).key}")
    return client


def rank(dataset, labeler, *, order=None, prompt=None):
    """Lease for `labeler` and rank the completions in position order (or by `order` positions)."""
    assignment = (
        make_lease(prompt, labeler)
        if prompt is not None
        else leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    )
    ids = list(assignment.prompt.completions.order_by("position").values_list("pk", flat=True))
    groups = [[ids[i] for i in group] for group in (order or [[i] for i in range(len(ids))])]
    return rankings.submit_ranking(
        assignment=assignment,
        order=groups,
        ratings={cid: {c: 4 for c in dataset.criterion_keys} for cid in ids},
        flags={},
        request_id=uuid.uuid4(),
        seconds_spent=5,
        strength="better" if len(ids) == 2 else "",
    )


def pull(client, dataset, endpoint="comparisons", **params):
    response = client.get(reverse(f"labeling-api:{endpoint}", args=[dataset.slug]), params)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/jsonl"
    body = b"".join(response.streaming_content)
    rows = [json.loads(line) for line in body.decode().splitlines()]
    return rows, response["X-PrefLab-Cursor"]


def test_trl_rows_follow_the_ranking(client, dataset, labeler):
    prompt = make_prompt(dataset, completions=3)
    rank(dataset, labeler, order=[[2], [0], [1]])
    rows, cursor = pull(client, dataset, format="trl")
    texts = {c.position: c.text for c in prompt.completions.all()}
    assert sorted((r["chosen"], r["rejected"]) for r in rows) == sorted(
        [(texts[2], texts[0]), (texts[2], texts[1]), (texts[0], texts[1])]
    )
    assert all(r["prompt"] == prompt.messages[0]["content"] for r in rows)
    assert cursor == str(Comparison.objects.order_by("pk").last().pk)


@pytest.mark.parametrize("format", ["trl-conversational", "hh", "openai"])
def test_conversational_formats(client, dataset, labeler, format):
    prompt = PromptFactory(dataset=dataset, messages=CONVERSATION)
    for position, text in enumerate(["Red", "No"]):
        prompt.completions.create(external_id=str(position), text=text, position=position)
    rank(dataset, labeler, order=[[0], [1]])
    [row], _ = pull(client, dataset, format=format)
    assert row == exports.comparison_row(format, CONVERSATION, "Red", "No")


def test_trl_export_of_a_dataset_with_conversations_is_conversational_on_every_row(
    client, dataset, labeler
):
    single = make_prompt(dataset, completions=2)
    conversation = PromptFactory(dataset=dataset, messages=CONVERSATION)
    for position, text in enumerate(["Red", "No"]):
        conversation.completions.create(external_id=str(position), text=text, position=position)
    for prompt in (single, conversation):
        rank(dataset, labeler, prompt=prompt, order=[[0], [1]])
    single_texts = [c.text for c in single.completions.order_by("position")]
    response = client.get(reverse("labeling-api:comparisons", args=[dataset.slug]))
    assert response.status_code == 200
    rows = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert rows == [
        exports.comparison_row("trl-conversational", single.messages, *single_texts),
        exports.comparison_row("trl-conversational", CONVERSATION, "Red", "No"),
    ]
    rows, _ = pull(client, dataset, format="trl", render="text")
    assert rows == [
        exports.comparison_row("trl", single.messages, *single_texts),
        exports.trl_text_row(CONVERSATION, "Red", "No"),
    ]


def test_default_export_of_the_demo_works(client, labeler):
    call_command("load_demo", stdout=io.StringIO())
    demo = Dataset.objects.get(slug="hhh-demo")
    change_pool(dataset=demo, add_labelers=[labeler])  # its pool holds the demo accounts
    assert demo.prompts.multi_turn().exists()
    for _ in range(demo.prompts.count()):
        rank(demo, labeler)
    rows, _ = pull(client, demo)
    assert rows and all(
        isinstance(row["prompt"], list)
        and row["prompt"][-1]["role"] == "user"
        and [message["role"] for message in row["chosen"] + row["rejected"]]
        == ["assistant", "assistant"]
        for row in rows
    )


def test_include_ids_traces_each_row_to_its_ranking(client, dataset, labeler):
    prompt = make_prompt(dataset, completions=2)
    ranking = rank(dataset, labeler, order=[[1], [0]])
    [row], _ = pull(client, dataset, include_ids="true")
    comparison = Comparison.objects.get()
    assert row["ids"] == {
        "comparison": comparison.pk,
        "ranking": ranking.pk,
        "prompt": prompt.pk,
        "chosen": comparison.chosen_id,
        "rejected": comparison.rejected_id,
        "chosen_external": "c1",
        "rejected_external": "c0",
    }
    assert (row["margin"], row["strength"]) == (1, "better")


def test_filters_gold_margin_and_labeler(client, dataset, labeler, other_labeler):
    dataset.labels_per_prompt = 2
    dataset.save()
    make_prompt(dataset, completions=3)
    gold = make_prompt(dataset, completions=3, is_gold=True, gold_order=[["c0"], ["c1"], ["c2"]])
    rank(dataset, labeler, prompt=gold)
    rank(dataset, labeler)
    rank(dataset, other_labeler)
    assert len(pull(client, dataset)[0]) == 6
    assert len(pull(client, dataset, exclude_gold="false")[0]) == 9
    assert len(pull(client, dataset, min_margin=2)[0]) == 2
    assert len(pull(client, dataset, labeler=pseudonym(other_labeler.pk))[0]) == 3


def test_rankings_export_uses_pseudonyms_never_usernames(client, dataset, labeler):
    make_prompt(dataset, completions=3)
    ranking = rank(dataset, labeler, order=[[1, 2], [0]])
    response = client.get(
        reverse("labeling-api:rankings", args=[dataset.slug]), {"include_ids": "true"}
    )
    body = b"".join(response.streaming_content).decode()
    assert labeler.username not in body
    [row] = [json.loads(line) for line in body.splitlines()]
    assert row["labeler"] == pseudonym(labeler.pk) == pseudonym(labeler.pk)
    assert row["order"] == [["c1", "c2"], ["c0"]]
    assert len(row["completions"]) == 3
    assert row["ids"]["ranking"] == ranking.pk
    assert row["guidelines_version"] == 1


def test_incremental_pulls_return_each_row_once(client, dataset, labeler, other_labeler):
    dataset.labels_per_prompt = 2
    dataset.save()
    for _ in range(3):
        make_prompt(dataset, completions=3)
    rank(dataset, labeler)
    first, cursor = pull(client, dataset, include_ids="true")
    rank(dataset, labeler)
    rank(dataset, other_labeler)
    second, cursor2 = pull(client, dataset, include_ids="true", since=cursor)
    third, cursor3 = pull(client, dataset, include_ids="true", since=cursor2)
    ids = [r["ids"]["comparison"] for r in first + second]
    assert len(ids) == len(set(ids)) == Comparison.objects.count() == 9
    assert (third, cursor3) == ([], cursor2)


def test_submissions_during_a_streamed_export_come_in_the_next_pull(
    client, dataset, labeler, monkeypatch
):
    monkeypatch.setattr(exports, "CHUNK_SIZE", 2)
    dataset.labels_per_prompt = 1
    dataset.save()
    for _ in range(4):
        make_prompt(dataset, completions=3)
    rank(dataset, labeler)
    rank(dataset, labeler)
    response = client.get(
        reverse("labeling-api:comparisons", args=[dataset.slug]), {"include_ids": "true"}
    )
    stream = iter(response.streaming_content)
    started = [next(stream)]
    rank(dataset, labeler)  # while the export is half read
    rows = [json.loads(line) for line in b"".join(started + list(stream)).decode().splitlines()]
    later, _ = pull(client, dataset, include_ids="true", since=response["X-PrefLab-Cursor"])
    ids = [r["ids"]["comparison"] for r in rows + later]
    assert (len(rows), len(later)) == (6, 3)
    assert sorted(ids) == sorted(Comparison.objects.values_list("pk", flat=True))


def test_gzip_when_the_client_accepts_it(client, dataset, labeler):
    make_prompt(dataset, completions=3)
    rank(dataset, labeler)
    response = client.get(
        reverse("labeling-api:comparisons", args=[dataset.slug]), HTTP_ACCEPT_ENCODING="gzip, br"
    )
    assert response["Content-Encoding"] == "gzip"
    lines = gzip.decompress(b"".join(response.streaming_content)).decode().splitlines()
    assert len(lines) == 3


@pytest.mark.parametrize(
    ("params", "field", "hint"),
    [
        ({"format": "xml"}, "format", "trl, trl-conversational, hh, openai"),
        ({"since": "abc"}, "since", "X-PrefLab-Cursor"),
        ({"since": "-5"}, "since", "X-PrefLab-Cursor"),
        ({"min_margin": "x"}, "min_margin", "whole number"),
        ({"exclude_gold": "maybe"}, "exclude_gold", "true or false"),
        ({"labeler": "lab-nobody"}, "labeler", "pseudonymous"),
    ],
)
def test_bad_parameters_are_400_listing_what_is_accepted(client, dataset, params, field, hint):
    response = client.get(reverse("labeling-api:comparisons", args=[dataset.slug]), params)
    assert response.status_code == 400
    assert hint in str(response.json()[field])


def test_rankings_endpoint_lists_its_format(client, dataset):
    response = client.get(reverse("labeling-api:rankings", args=[dataset.slug]), {"format": "hh"})
    assert response.status_code == 400
    assert "rankings" in response.json()["format"][0]


def test_export_reads_a_fixed_number_of_queries_per_chunk(
    client, dataset, django_assert_max_num_queries
):
    dataset.labels_per_prompt = 3
    dataset.save()
    for _ in range(10):
        make_prompt(dataset, completions=4)
    for user in UserFactory.create_batch(3):
        for _ in range(10):
            rank(dataset, user)
    # One chunk: on PostgreSQL, two of these read its prompts and completions by id range.
    with django_assert_max_num_queries(14):
        rows, _ = pull(client, dataset)
    assert len(rows) == 10 * 3 * 6


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_cursor_never_passes_a_submission_still_in_flight(staff):
    """A submission that took a lower id but commits after a later one is not skipped."""
    dataset = DatasetFactory(labels_per_prompt=1)
    for _ in range(3):
        make_prompt(dataset, completions=3)
    slow, fast = UserFactory(), UserFactory()
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_submit() -> None:
        try:
            with transaction.atomic():
                rank(dataset, slow)
                holding.set()
                release.wait(30)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    def fast_submit() -> None:
        try:
            rank(dataset, fast)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    seen: dict[str, object] = {}

    def export() -> None:
        # What a pull would stream: the rows at or below its cursor that it can read then.
        try:
            cursor = rankings.export_cursor(dataset=dataset, model=Comparison)
            seen["cursor"] = cursor
            seen["rows"] = set(
                Comparison.objects.filter(pk__lte=cursor).values_list("pk", flat=True)
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=f) for f in (slow_submit, fast_submit, export)]
    threads[0].start()
    assert holding.wait(30)
    # Without the lock, the fast submission commits and the export runs while the slow one, with
    # the lower ids, is still open; with it, the export waits. The joins only give them the chance.
    for thread in threads[1:]:
        thread.start()
        thread.join(1)
    release.set()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert Ranking.objects.count() == 2
    # Nothing at or below the cursor may show up after the pull: the next pull would miss it.
    committed = set(Comparison.objects.filter(pk__lte=seen["cursor"]).values_list("pk", flat=True))
    assert committed == seen["rows"]


TRICKY = [
    {"role": "system", "content": 'Quote " backslash \\ tab\t'},
    {"role": "user", "content": "Ünïcödé ✓ and a\nnewline and \u2028 and emoji 🙂"},
]


@pytest.mark.parametrize("format", exports.COMPARISON_FORMATS)
def test_streamed_lines_equal_the_row_definition(format):
    chosen, rejected = 'She said "hi"\\n', "</script> ü\r\n"
    line = exports.comparison_line(
        format,
        exports.prompt_json(format, TRICKY),
        exports.encode(chosen),
        exports.encode(rejected),
    )
    row = exports.comparison_row(format, TRICKY, chosen, rejected)
    assert line == json.dumps(row, ensure_ascii=False)


@pytest.mark.parametrize("format", exports.COMPARISON_FORMATS)
def test_exported_lines_are_the_bytes_python_builds(client, dataset, labeler, format):
    """On PostgreSQL the database writes some JSON pieces: the lines must still be the bytes of
    `json.dumps(comparison_row(...))`, as on SQLite."""
    messages = [*TRICKY, {"role": "user", "content": "controls \x01\x1f\x7f \\u0041 /"}]
    if format == "trl":
        messages = messages[-1:]
    prompt = PromptFactory(dataset=dataset, messages=messages)
    texts = ['ü "a"\t\\', "\x02 🙂\u2029"]
    for position, text in enumerate(texts):
        prompt.completions.create(external_id=str(position), text=text, position=position)
    rank(dataset, labeler, order=[[1], [0]])
    response = client.get(
        reverse("labeling-api:comparisons", args=[dataset.slug]), {"format": format}
    )
    row = exports.comparison_row(format, messages, texts[1], texts[0])
    expected = json.dumps(row, ensure_ascii=False) + "\n"
    assert b"".join(response.streaming_content) == expected.encode()


def test_streamed_text_rendering_equals_the_row_definition():
    pair_format = exports.line_format("trl", TRICKY, render_text=True)
    line = exports.comparison_line(
        pair_format,
        exports.prompt_json(pair_format, TRICKY),
        exports.encode('a"b'),
        exports.encode("c"),
    )
    assert line == json.dumps(exports.trl_text_row(TRICKY, 'a"b', "c"), ensure_ascii=False)


def counted_chunks(count, log):
    """Chunks [0] .. [count - 1], logging each fetch's thread and how many were fetched."""
    for number in range(count):
        log.append((threading.current_thread().name, number))
        yield [number]


@pytest.mark.parametrize("threaded", [True, False])
def test_read_ahead_gives_every_chunk_in_order_holding_at_most_two(threaded):
    log = []
    got = []
    for chunk in pair_reads.read_ahead(counted_chunks(6, log), threaded=threaded):
        fetched = len(log)
        assert fetched <= chunk[0] + 2  # this one and at most the next
        got.append(chunk[0])
    assert got == list(range(6))
    threads = [name for name, _ in log]
    assert threads[0] == threading.current_thread().name  # the query starts on its connection
    readers = {name.startswith("export-read-ahead") for name in threads[1:]}
    assert readers == {threaded}


def test_read_ahead_closed_early_waits_for_the_fetch_in_flight():
    fetching, fetched = threading.Event(), []

    def slow():
        yield [0]
        fetching.set()
        threading.Event().wait(0.2)  # a slow FETCH from the server
        fetched.append(1)
        yield [1]

    chunks = pair_reads.read_ahead(slow(), threaded=True)
    assert next(chunks) == [0]
    assert fetching.wait(5)
    chunks.close()  # the caller closes its cursor next: no fetch may still be using it
    assert fetched == [1]


def test_read_ahead_raises_a_failed_fetch_to_the_caller():
    def failing():
        yield [0]
        raise RuntimeError("server closed the connection")

    chunks = pair_reads.read_ahead(failing(), threaded=True)
    assert next(chunks) == [0]
    with pytest.raises(RuntimeError, match="server closed"):
        next(chunks)
