"""File parsing without the database: plain bytes in, records or line-numbered errors out."""

from __future__ import annotations

import gzip
import io
import json

import pytest
from django.core.exceptions import ValidationError

from labeling import formats


def read(content: bytes, filename: str = "data.jsonl", format: str | None = None) -> list:
    return list(formats.read_records(io.BytesIO(content), filename=filename, format=format))


def jsonl(*rows: dict) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def validated(record: formats.ParsedPrompt) -> formats.ParsedPrompt:
    formats.validate_record(record, max_text_chars=1000)
    return record


def test_hh_dialogue_round_trips_exactly():
    text = "\n\nHuman: Hi there\n\nAssistant: Hello!  How can I help?\n\nHuman: Tell me a joke."
    messages = formats.parse_hh_dialogue(text)
    assert messages == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!  How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ]
    assert formats.render_hh_dialogue(messages) == text


def test_hh_pair_splits_into_conversation_and_two_replies():
    row = {
        "chosen": "\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help with that.",
        "rejected": "\n\nHuman: How do I pick a lock?\n\nAssistant: Sure, first get a pick.",
    }
    [record] = read(jsonl(row))
    assert record.messages == [{"role": "user", "content": "How do I pick a lock?"}]
    texts = {c.text for c in record.completions}
    assert texts == {"I can't help with that.", "Sure, first get a pick."}
    preferred = next(c for c in record.completions if c.text == "I can't help with that.")
    assert record.metadata["hh_preferred"] == preferred.external_id


def test_hh_completions_do_not_reveal_the_preferred_one_by_position():
    rows = [
        {
            "chosen": f"\n\nHuman: q{i}\n\nAssistant: good {i}",
            "rejected": f"\n\nHuman: q{i}\n\nAssistant: bad {i}",
        }
        for i in range(20)
    ]
    firsts = {record.completions[0].text.split()[0] for record in read(jsonl(*rows))}
    assert firsts == {"good", "bad"}


def test_hh_pair_without_shared_prefix_is_reported_as_skipped():
    row = {"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: b\n\nAssistant: y"}
    [skipped] = read(jsonl(row))
    assert isinstance(skipped, formats.SkippedLine)
    assert skipped.line == 1
    assert "do not share" in skipped.reason


def test_preflab_record_accepts_text_and_objects():
    row = {
        "id": "q1",
        "prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
        "completions": ["Hello", {"id": "b", "text": "Hey", "model": "m2", "metadata": {"t": 1}}],
        "metadata": {"topic": "greeting"},
    }
    [record] = read(jsonl(row))
    validated(record)
    assert record.external_id == "q1"
    assert [c.external_id for c in record.completions][1] == "b"
    assert record.completions[1].model_name == "m2"
    assert record.metadata == {"topic": "greeting"}


def test_missing_prompt_id_is_derived_from_content():
    row = {"prompt": "Hi", "completions": ["a", "b"]}
    first = validated(read(jsonl(row))[0])
    again = validated(read(jsonl(row))[0])
    assert first.external_id == again.external_id
    assert first.external_id.startswith("p-")


def test_csv_reads_prompt_and_completion_columns():
    content = b"id,prompt,completion_a,completion_b,completion_c,topic\nr1,Hi?,Hello,Hey,,chat\n"
    [record] = read(content, filename="x.csv")
    assert record.external_id == "r1"
    assert [c.external_id for c in record.completions] == ["completion_a", "completion_b"]
    assert record.metadata == {"topic": "chat"}
    assert record.line == 2


def test_csv_without_prompt_column_names_the_header():
    with pytest.raises(ValidationError, match="line 1: the header has no 'prompt' column"):
        read(b"question,completion_1,completion_2\nq,a,b\n", filename="x.csv")


def test_gzip_is_detected_from_content():
    content = gzip.compress(jsonl({"prompt": "Hi", "completions": ["a", "b"]}))
    [record] = read(content, filename="upload.bin")
    assert record.messages[0]["content"] == "Hi"


def test_truncated_gzip_is_a_clear_error():
    content = gzip.compress(
        jsonl(*[{"prompt": f"Hi {i}", "completions": ["a", "b"]} for i in range(500)])
    )
    with pytest.raises(ValidationError, match="cannot be read"):
        read(content[: len(content) // 2])


def test_invalid_json_names_the_line():
    content = jsonl({"prompt": "Hi", "completions": ["a", "b"]}) + b"{not json}\n"
    with pytest.raises(ValidationError, match="line 2: is not valid JSON"):
        read(content)


def test_blank_lines_are_ignored_and_keep_line_numbers():
    content = b"\n" + jsonl({"prompt": "Hi", "completions": "nope"})
    with pytest.raises(ValidationError, match="line 2: field 'completions' must be a list"):
        read(content)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"prompt": "Hi", "completions": ["only one"]},
            "field 'completions' has 1; a prompt needs 2 to 9",
        ),
        ({"prompt": "Hi", "completions": [str(i) for i in range(10)]}, "has 10"),
        ({"prompt": "Hi", "completions": ["same", "same"]}, "repeats the id"),
        ({"prompt": "Hi", "completions": ["x" * 1001, "b"]}, "longer than 1000 characters"),
        (
            {"prompt": [{"role": "bot", "content": "Hi"}], "completions": ["a", "b"]},
            "prompt[0].role",
        ),
        (
            {
                "prompt": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Yo"},
                ],
                "completions": ["a", "b"],
            },
            "must end with a user message",
        ),
        ({"prompt": "", "completions": ["a", "b"]}, "field 'prompt' is empty"),
        ({"prompt": "Hi", "completions": ["a", "b"], "gold_order": [["a"]]}, "gold_order"),
    ],
)
def test_limits_are_checked_with_line_and_field(row, message):
    [record] = read(b"\n\n" + jsonl(row))
    with pytest.raises(ValidationError, match="line 3") as error:
        validated(record)
    assert message in str(error.value)


def test_an_empty_reply_is_a_completion_like_any_other():
    # Real HH data has replies where the assistant said nothing; they are ranked, not refused.
    [record] = read(jsonl({"prompt": "Hi", "completions": ["Hello", ""]}))
    assert validated(record).completions[1].text == ""


def test_unknown_format_lists_the_accepted_ones():
    with pytest.raises(ValidationError, match="preflab, hh, csv"):
        read(b"", format="xml")


LIMITS = formats.ReadLimits(max_bytes=2000, max_line_bytes=200, max_records=3)
ROW = {"prompt": "Hi?", "completions": ["a", "b"]}


def read_limited(content: bytes, filename: str = "data.jsonl") -> list:
    return list(formats.read_records(io.BytesIO(content), filename=filename, limits=LIMITS))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (jsonl(ROW) + b'{"prompt": "' + b"x" * 300 + b'"}\n', "line 2: is longer than 200 bytes"),
        (jsonl(ROW, ROW, ROW, ROW), "line 4: is past the limit of 3 prompts a file"),
        (b"\n" * 2500, "more than 2000 bytes once decompressed"),
        (gzip.compress(b"\n" * 2500), "more than 2000 bytes once decompressed"),
    ],
)
def test_a_file_past_a_limit_stops_at_the_line(content, message):
    with pytest.raises(ValidationError, match=message):
        read_limited(content)


def test_one_huge_compressed_line_is_refused_without_being_held():
    limits = formats.ReadLimits(max_line_bytes=1000)
    stream = io.BytesIO(gzip.compress(b"x" * 10**8))  # 100 MB in ~100 KB
    with pytest.raises(ValidationError, match="line 1: is longer than 1000 bytes"):
        list(formats.read_records(stream, filename="big.jsonl.gz", limits=limits))


def test_nesting_past_the_parsers_depth_is_a_line_error_too():
    with pytest.raises(ValidationError, match="line 2: is nested too deeply"):
        read(jsonl(ROW) + b"[" * 100_000 + b"\n")


def test_csv_rows_count_against_the_limit():
    content = b"prompt,completion_1,completion_2\n" + b"Hi?,a,b\n" * 4
    with pytest.raises(ValidationError, match="line 5: is past the limit of 3 prompts"):
        read_limited(content, filename="data.csv")


def test_a_corrupt_gzip_is_an_error_not_a_crash():
    corrupt = bytearray(gzip.compress(jsonl(ROW) * 50))
    corrupt[30:40] = b"\xff" * 10
    with pytest.raises(ValidationError, match="the file cannot be read"):
        read(bytes(corrupt))


def test_a_csv_row_past_the_line_limit_is_refused_while_reading():
    content = b"prompt,completion_1,completion_2\n" + b"Hi?," + b"a," * 200 + b"b\n"
    with pytest.raises(ValidationError, match="line 2: is longer than 200 bytes"):
        read_limited(content, filename="data.csv")
