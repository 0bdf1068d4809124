from __future__ import annotations

import contextlib
import gzip
import io
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

from labeling.models import Completion, Dataset, ImportJob, Prompt
from labeling.services import import_batches, imports

SHARED_HH = Path(__file__).resolve().parents[3] / "shared" / "data" / "hh_harmless_dev.jsonl.gz"


def jsonl(*rows: dict) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def run_import(dataset, content: bytes, filename: str = "data.jsonl", **options):
    return imports.import_dataset(
        dataset=dataset, stream=io.BytesIO(content), filename=filename, **options
    )


def rows(count: int, start: int = 0) -> list[dict]:
    return [
        {
            "id": f"q{i}",
            "prompt": f"Question {i}?",
            "completions": [f"yes {i}", f"no {i}", f"maybe {i}"],
        }
        for i in range(start, start + count)
    ]


def test_import_creates_prompts_and_completions_in_file_order(dataset):
    result = run_import(dataset, jsonl(*rows(3)))
    assert (result.created, result.unchanged) == (3, 0)
    prompt = Prompt.objects.get(dataset=dataset, external_id="q1")
    assert prompt.messages == [{"role": "user", "content": "Question 1?"}]
    assert [c.text for c in prompt.completions.order_by("position")] == ["yes 1", "no 1", "maybe 1"]


def test_reimporting_the_same_file_changes_nothing(dataset):
    run_import(dataset, jsonl(*rows(5)))
    result = run_import(dataset, jsonl(*rows(5)))
    assert (result.created, result.unchanged) == (0, 5)
    assert Prompt.objects.filter(dataset=dataset).count() == 5
    assert Completion.objects.filter(prompt__dataset=dataset).count() == 15


def test_a_grown_file_adds_only_the_new_prompts(dataset):
    run_import(dataset, jsonl(*rows(5)))
    result = run_import(dataset, jsonl(*rows(8)))
    assert (result.created, result.unchanged) == (3, 5)


def test_same_id_with_other_content_is_refused_and_changes_nothing(dataset):
    run_import(dataset, jsonl(*rows(2)))
    changed = rows(2)
    changed[1]["completions"][0] = "edited"
    with pytest.raises(
        ValidationError, match="line 5: field 'id': prompt 'q1' is already in the dataset"
    ):
        run_import(dataset, jsonl(*rows(3, start=10), *changed))
    assert Prompt.objects.filter(dataset=dataset).count() == 2


def test_bad_line_after_several_batches_rolls_back_everything(dataset, monkeypatch):
    monkeypatch.setattr(import_batches, "IMPORT_BATCH_SIZE", 10)
    bad = {"id": "bad", "prompt": "Hi", "completions": ["only one"]}
    with pytest.raises(ValidationError, match="line 36: field 'completions' has 1"):
        run_import(dataset, jsonl(*rows(35), bad, *rows(5, start=100)))
    assert not Prompt.objects.filter(dataset=dataset).exists()
    assert not Completion.objects.exists()


def test_duplicate_id_within_one_file_with_other_content_is_refused(dataset):
    twin = rows(1)[0] | {"completions": ["a", "b"]}
    with pytest.raises(ValidationError, match="line 2: field 'id'"):
        run_import(dataset, jsonl(rows(1)[0], twin))
    assert not Prompt.objects.exists()


def test_an_id_repeated_in_a_later_batch_counts_once_or_is_refused(dataset, monkeypatch):
    """A new dataset's batches are written without looking their ids up: a repeat in a later
    batch is still found, whether it is the same prompt (counted once) or another (refused)."""
    monkeypatch.setattr(import_batches, "IMPORT_BATCH_SIZE", 2)
    result = run_import(dataset, jsonl(*rows(5), rows(1, start=1)[0], *rows(3, start=5)))
    assert (result.created, result.unchanged) == (8, 1)
    assert Completion.objects.filter(prompt__dataset=dataset).count() == 24
    other = Dataset.objects.create(slug="other", name="Other")
    twin = rows(1, start=1)[0] | {"completions": ["a", "b"]}
    with pytest.raises(ValidationError, match="line 6: field 'id': prompt 'q1' is already"):
        run_import(other, jsonl(*rows(5), twin, *rows(3, start=5)))
    assert not other.prompts.exists()


def test_the_first_error_of_the_file_is_the_one_reported(dataset, monkeypatch):
    """Lines are read ahead of the batches being written, but errors come in line order: a
    refused id on line 3 (found while writing) wins over a malformed line 9 (found reading)."""
    monkeypatch.setattr(import_batches, "IMPORT_BATCH_SIZE", 2)
    run_import(dataset, jsonl(*rows(2)))
    changed = rows(1, start=1)[0] | {"completions": ["a", "b"]}
    content = jsonl(*rows(1, start=10), *rows(1, start=11), changed, *rows(5, start=20))
    with pytest.raises(ValidationError, match="line 3: field 'id'"):
        run_import(dataset, content + b"{not json\n")
    assert Prompt.objects.filter(dataset=dataset).count() == 2


def test_a_failed_import_leaves_no_reader_thread(dataset, monkeypatch):
    monkeypatch.setattr(import_batches, "IMPORT_BATCH_SIZE", 2)
    bad = {"id": "bad", "prompt": "Hi", "completions": ["only one"]}
    for content in (jsonl(*rows(9), bad), jsonl(*rows(30)) + b"{not json\n"):
        with pytest.raises(ValidationError):
            run_import(dataset, content)
    assert not [t for t in threading.enumerate() if t.name == "preflab-import-reader"]


def test_text_that_copy_escapes_comes_back_as_it_was(dataset):
    """Tabs, newlines, carriage returns and backslashes (COPY's text format escapes them on
    PostgreSQL), a literal \\N, quotes and non-ASCII text round-trip through an import."""
    tricky = 'a\tb\nc\r\nd \\ \\N \\t "quoted" \u00e9\u4e2d\U0001f600 '
    row = {
        "id": "x\ty\\z",
        "prompt": [{"role": "user", "content": tricky}],
        "completions": [
            {"id": "c\n1", "text": tricky, "model": "m\\1", "metadata": {"k": tricky}},
            {"id": "c2", "text": "\\N"},
        ],
        "metadata": {"note": tricky, "n": [1, 2.5, None, True]},
        "gold_order": ["c2", "c\n1"],
    }
    run_import(dataset, jsonl(row))
    prompt = Prompt.objects.get(dataset=dataset)
    assert prompt.external_id == "x\ty\\z"
    assert prompt.messages == [{"role": "user", "content": tricky}]
    assert prompt.metadata == {"note": tricky, "n": [1, 2.5, None, True]}
    assert prompt.is_gold and prompt.gold_order == [["c2"], ["c\n1"]]
    first, second = prompt.completions.order_by("position")
    assert (first.external_id, first.text, first.model_name) == ("c\n1", tricky, "m\\1")
    assert first.metadata == {"k": tricky}
    assert second.text == "\\N"
    assert run_import(dataset, jsonl(row)).unchanged == 1


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (
            {"prompt": "a\u0000b", "completions": ["x", "y"]},
            "field 'prompt[0].content' holds a NUL",
        ),
        ({"prompt": "a", "completions": ["x", "y\u0000"]}, "field 'completions[1]'.text holds"),
        ({"id": "p\u0000", "prompt": "a", "completions": ["x", "y"]}, "field 'id' holds a NUL"),
    ],
)
def test_a_nul_character_is_refused_with_its_line(dataset, row, problem):
    with pytest.raises(ValidationError, match=re.escape(f"line 2: {problem}")):
        run_import(dataset, jsonl(*rows(1), row))
    assert not Prompt.objects.exists()


def test_hh_import_skips_and_reports_pairs_without_shared_prefix(dataset):
    good = {
        "chosen": "\n\nHuman: hi\n\nAssistant: hello",
        "rejected": "\n\nHuman: hi\n\nAssistant: go away",
    }
    odd = {"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: b\n\nAssistant: y"}
    result = run_import(dataset, jsonl(good, odd))
    assert result.created == 1
    assert [s.line for s in result.skipped] == [2]
    assert "1 lines skipped (lines 2)" in result.summary()
    prompt = Prompt.objects.get()
    assert not prompt.rankings.exists()
    assert prompt.completions.count() == 2


def test_hh_import_in_strict_mode_refuses_the_file(dataset):
    good = {
        "chosen": "\n\nHuman: hi\n\nAssistant: hello",
        "rejected": "\n\nHuman: hi\n\nAssistant: go away",
    }
    odd = {"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: b\n\nAssistant: y"}
    with pytest.raises(ValidationError, match="line 2: 'chosen' and 'rejected' do not share"):
        run_import(dataset, jsonl(good, odd), strict=True)
    assert not Prompt.objects.exists()


def test_csv_and_gzip_import(dataset):
    content = gzip.compress(
        b"id,prompt,completion_1,completion_2\nr1,Hi?,Hello,Hey\nr2,Bye?,Ciao,See you\n"
    )
    result = run_import(dataset, content, filename="prompts.csv.gz")
    assert result.created == 2
    assert set(Completion.objects.values_list("external_id", flat=True)) == {
        "completion_1",
        "completion_2",
    }


def test_gold_order_marks_the_prompt_gold(dataset):
    row = {
        "id": "g",
        "prompt": "2+2?",
        "completions": [{"id": "a", "text": "4"}, {"id": "b", "text": "5"}],
        "gold_order": [["a"], ["b"]],
    }
    run_import(dataset, jsonl(row))
    prompt = Prompt.objects.get()
    assert prompt.is_gold
    assert prompt.gold_order == [["a"], ["b"]]


def test_file_over_the_size_limit_is_refused(dataset, settings):
    settings.PREFLAB_IMPORT_MAX_BYTES = 10
    with pytest.raises(ValidationError, match="the limit is 10 bytes"):
        run_import(dataset, jsonl(*rows(1)), size=100)


def test_command_creates_the_dataset_and_reports(tmp_path, db):
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(jsonl(*rows(4)))
    out = io.StringIO()
    call_command("import_dataset", str(path), "--dataset", "fresh", stdout=out)
    assert "Created dataset 'fresh'" in out.getvalue()
    assert "4 prompts imported, 0 already present" in out.getvalue()
    assert Dataset.objects.get(slug="fresh").prompts.count() == 4


def test_command_names_the_bad_line(tmp_path, dataset):
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(jsonl(*rows(2)) + b'{"prompt": "Hi", "completions": []}\n')
    with pytest.raises(CommandError, match="line 3: field 'completions' has 0"):
        call_command("import_dataset", str(path), "--dataset", dataset.slug)
    assert not Prompt.objects.exists()


def upload_in_the_admin(client, dataset, content: bytes, captured) -> Any:
    """Post a file to the admin's import form and run the job its worker would."""
    upload = io.BytesIO(content)
    upload.name = "up.jsonl"
    with captured() as callbacks:
        response = client.post(
            reverse("admin:labeling_dataset_import", args=[dataset.pk]),
            {"file": upload, "format": ""},
        )
    job = ImportJob.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("admin:labeling_importjob_change", args=[job.pk])
    assert len(callbacks) == 1  # queued after commit, not imported in the request
    assert not dataset.prompts.exists()
    with contextlib.suppress(ValidationError):
        imports.run_import_job(job_id=job.pk)
    return client.get(response.url).content.decode()


def test_staff_upload_form_queues_the_import(
    client, staff, dataset, django_capture_on_commit_callbacks
):
    client.force_login(staff)
    page = upload_in_the_admin(client, dataset, jsonl(*rows(3)), django_capture_on_commit_callbacks)
    assert dataset.prompts.count() == 3
    assert "Succeeded" in page and "http-equiv" not in page  # done: no more reloading


def test_upload_form_shows_the_line_error_and_stores_nothing(
    client, staff, dataset, django_capture_on_commit_callbacks
):
    client.force_login(staff)
    content = jsonl(*rows(3)) + b"oops\n"
    page = upload_in_the_admin(client, dataset, content, django_capture_on_commit_callbacks)
    assert "line 4: is not valid JSON" in page
    assert not dataset.prompts.exists()
    assert not ImportJob.objects.get().file  # the upload is deleted


def test_labelers_cannot_reach_the_upload_form(client, labeler, dataset):
    client.force_login(labeler)
    response = client.get(reverse("admin:labeling_dataset_import", args=[dataset.pk]))
    assert response.status_code == 403


@pytest.mark.skipif(
    not SHARED_HH.exists(), reason="../shared/data/hh_harmless_dev.jsonl.gz is absent"
)
def test_real_hh_file_imports_with_its_two_unpaired_lines_reported(dataset):
    with SHARED_HH.open("rb") as stream:
        result = imports.import_dataset(dataset=dataset, stream=stream, filename=SHARED_HH.name)
    assert result.created + result.unchanged == 1154
    assert [s.line for s in result.skipped] == [840, 971]
    assert Completion.objects.filter(prompt__dataset=dataset).count() == 2 * result.created


@pytest.mark.parametrize(
    ("content", "filename"),
    [
        (b"id,prompt,completion_1,completion_2\nr1,Hi?,Hello,Hey\n", "p.csv"),
        (gzip.compress(b"id,prompt,completion_1,completion_2\nr1,Hi?,Hello,Hey\n"), "p.csv.gz"),
        (jsonl(*rows(3)), "p.jsonl"),
        (gzip.compress(jsonl(*rows(3))), "p.jsonl.gz"),
    ],
)
def test_the_callers_stream_stays_open_and_progress_is_reported(
    tmp_path, dataset, content, filename
):
    path = tmp_path / filename
    path.write_bytes(content)
    seen: list[int] = []
    with path.open("rb", buffering=0) as stream:
        imports.import_dataset(
            dataset=dataset, stream=stream, filename=filename, on_progress=seen.append
        )
        assert not stream.closed
    assert seen == [len(content)]
