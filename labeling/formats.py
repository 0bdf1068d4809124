"""Reading import files (PrefLab JSON Lines, Anthropic HH pairs, CSV) into plain records.

Everything here works on bytes, strings and dicts; the database is
`services.imports.import_dataset`'s business. Files are read one line at a time, so a file of
any size costs the memory of one line.
Every error names the line and the field.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import zlib
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson
from django.core.exceptions import ValidationError

from labeling import orders

FORMATS = ("preflab", "hh", "csv")
ROLES = ("system", "user", "assistant")
MIN_COMPLETIONS = 2
MAX_COMPLETIONS = 9
MAX_ID_CHARS = 200
GZIP_MAGIC = b"\x1f\x8b"
HOLDS_NUL = "holds a NUL character (\\u0000), which the database cannot store"


@dataclass(frozen=True)
class ReadLimits:
    """What reading one file may take, checked while streaming: its size once decompressed,
    the length of one line and the number of records (non-blank lines or CSV rows)."""

    max_bytes: int = 4 * 1024**3
    max_line_bytes: int = 16 * 1024**2
    max_records: int = 2_000_000


class _Capped(io.RawIOBase):
    """A stream that refuses to give more than `limit` bytes (of a decompressed file, say)."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self.stream, self.limit, self.read_so_far = stream, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(min(len(buffer), self.limit + 1 - self.read_so_far))
        self.read_so_far += len(data)
        if self.read_so_far > self.limit:
            raise ValidationError(
                f"the file is more than {self.limit} bytes once decompressed; that is the limit"
            )
        buffer[: len(data)] = data
        return len(data)


@dataclass
class ParsedCompletion:
    external_id: str
    text: str
    model_name: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParsedPrompt:
    line: int
    external_id: str
    messages: list[dict[str, str]]
    completions: list[ParsedCompletion]
    metadata: dict[str, Any] = field(default_factory=dict)
    gold_order: list[list[str]] | None = None

    @property
    def content_hash(self) -> str:
        content = [
            self.messages,
            [[c.external_id, c.text, c.model_name] for c in self.completions],
            self.gold_order,
        ]
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


@dataclass
class SkippedLine:
    line: int
    reason: str


def line_error(line: int, message: str) -> ValidationError:
    return ValidationError(f"line {line}: {message}")


def short_hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


# --- Anthropic HH-RLHF dialogues -------------------------------------------------------------

HH_TURN = re.compile(r"\n\n(Human|Assistant):")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}
HH_NAMES = {"user": "Human", "assistant": "Assistant", "system": "System"}


def parse_hh_dialogue(text: str) -> list[dict[str, str]]:
    """'\\n\\nHuman: hi\\n\\nAssistant: hello' -> [{"role": "user", ...}, {"role": ...}].

    The single space after each speaker's colon belongs to the format, not to the message, so
    `render_hh_dialogue` gives back the original text.
    """
    pieces = HH_TURN.split(text)
    if pieces[0].strip():
        raise ValueError("text before the first '\\n\\nHuman:' turn")
    messages = []
    for speaker, content in zip(pieces[1::2], pieces[2::2], strict=True):
        messages.append({"role": HH_ROLES[speaker], "content": content.removeprefix(" ")})
    return messages


def render_hh_dialogue(messages: list[dict[str, str]]) -> str:
    return "".join(f"\n\n{HH_NAMES[m['role']]}: {m['content']}" for m in messages)


def split_hh_pair(chosen: str, rejected: str) -> tuple[list[dict[str, str]], str, str] | None:
    """The shared conversation and the two final replies, or None when the prefixes differ."""
    chosen_cut = chosen.rfind("\n\nAssistant:")
    rejected_cut = rejected.rfind("\n\nAssistant:")
    if chosen_cut < 0 or rejected_cut < 0 or chosen[:chosen_cut] != rejected[:rejected_cut]:
        return None
    conversation = parse_hh_dialogue(chosen[:chosen_cut])
    reply_start = chosen_cut + len("\n\nAssistant:")
    chosen_reply = chosen[reply_start:].removeprefix(" ")
    rejected_reply = rejected[rejected_cut + len("\n\nAssistant:") :].removeprefix(" ")
    return conversation, chosen_reply, rejected_reply


def hh_record(line: int, row: dict[str, Any]) -> ParsedPrompt | SkippedLine:
    for name in ("chosen", "rejected"):
        if not isinstance(row.get(name), str):
            raise line_error(line, f"field '{name}' must be a string of HH dialogue")
    try:
        split = split_hh_pair(row["chosen"], row["rejected"])
    except ValueError as error:
        raise line_error(line, f"field 'chosen': {error}") from None
    if split is None:
        return SkippedLine(
            line, "'chosen' and 'rejected' do not share the conversation before the last reply"
        )
    conversation, chosen_reply, rejected_reply = split
    if chosen_reply == rejected_reply:
        return SkippedLine(line, "'chosen' and 'rejected' end with the same reply")
    chosen_id, rejected_id = short_hash(chosen_reply), short_hash(rejected_reply)
    metadata = {k: v for k, v in row.items() if k not in ("chosen", "rejected", "id")}
    # The file's own preference is kept as information only, never as a ranking.
    metadata["hh_preferred"] = chosen_id
    return ParsedPrompt(
        line=line,
        external_id=str(row.get("id") or "hh-" + short_hash(row["chosen"], row["rejected"])),
        messages=conversation,
        # Completions in a fixed order that does not reveal which one was preferred.
        completions=sorted(
            [
                ParsedCompletion(chosen_id, chosen_reply),
                ParsedCompletion(rejected_id, rejected_reply),
            ],
            key=lambda completion: completion.external_id,
        ),
        metadata=metadata,
    )


# --- PrefLab JSON Lines ----------------------------------------------------------------------


def preflab_record(line: int, row: dict[str, Any]) -> ParsedPrompt:
    messages = _preflab_messages(line, row.get("prompt"))
    completions = _preflab_completions(line, row.get("completions"))
    metadata = row.get("metadata", {})
    if not isinstance(metadata, dict):
        raise line_error(line, "field 'metadata' must be an object")
    gold_order = row.get("gold_order")
    if gold_order is not None:
        if not isinstance(gold_order, list):
            raise line_error(line, "field 'gold_order' must be a list of completion ids")
        gold_order = [
            [str(i) for i in group] if isinstance(group, list) else [str(group)]
            for group in gold_order
        ]
    record_id = row.get("id")
    return ParsedPrompt(
        line=line,
        external_id=str(record_id) if record_id not in (None, "") else "",
        messages=messages,
        completions=completions,
        metadata=metadata,
        gold_order=gold_order,
    )


def _preflab_messages(line: int, prompt: Any) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list):
        raise line_error(line, "field 'prompt' must be a string or a list of messages")
    messages = []
    for index, message in enumerate(prompt):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or not isinstance(message.get("content"), str)
        ):
            raise line_error(
                line, f"field 'prompt[{index}]' must be an object with 'role' and 'content'"
            )
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def _preflab_completions(line: int, raw_completions: Any) -> list[ParsedCompletion]:
    if not isinstance(raw_completions, list):
        raise line_error(line, "field 'completions' must be a list")
    completions = []
    for index, item in enumerate(raw_completions):
        where = f"field 'completions[{index}]'"
        if isinstance(item, str):
            completions.append(ParsedCompletion(short_hash(item), item))
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            metadata = item.get("metadata", {})
            if not isinstance(metadata, dict):
                raise line_error(line, f"{where}.metadata must be an object")
            completions.append(
                ParsedCompletion(
                    external_id=str(item.get("id") or short_hash(item["text"])),
                    text=item["text"],
                    model_name=str(item.get("model") or ""),
                    metadata=metadata,
                )
            )
        else:
            raise line_error(line, f"{where} must be a string or an object with 'text'")
    return completions


# --- CSV -------------------------------------------------------------------------------------


def csv_records(text: Iterable[str], limits: ReadLimits = ReadLimits()) -> Iterator[ParsedPrompt]:
    """Header row: 'prompt', optional 'id', and one column per completion named 'completion...'.

    The completion's column name is its id; empty cells are left out, other columns are metadata.
    """
    reader = csv.DictReader(text)
    header = reader.fieldnames or []
    if "prompt" not in header:
        raise line_error(1, "the header has no 'prompt' column")
    completion_columns = [name for name in header if name.lower().startswith("completion")]
    if len(completion_columns) < MIN_COMPLETIONS:
        raise line_error(
            1, "the header needs at least two completion columns (completion_1, completion_2, ...)"
        )
    for records, row in enumerate(reader, start=1):
        line = reader.line_num
        if records > limits.max_records:
            raise line_error(line, f"is past the limit of {limits.max_records} prompts a file")
        if None in row:
            raise line_error(line, f"has more cells than the header's {len(header)} columns")
        yield ParsedPrompt(
            line=line,
            external_id=row.get("id") or "",
            messages=[{"role": "user", "content": row["prompt"] or ""}],
            completions=[
                ParsedCompletion(name, row[name]) for name in completion_columns if row[name]
            ],
            metadata={
                name: value
                for name, value in row.items()
                if name not in completion_columns and name not in ("id", "prompt") and value
            },
        )


# --- Reading a file --------------------------------------------------------------------------


def open_binary(stream: IO[bytes]) -> IO[bytes]:
    """The stream, decompressed when it starts like a gzip file. Needs a stream with `peek`."""
    if stream.peek(2)[:2] == GZIP_MAGIC:  # type: ignore[attr-defined]
        return gzip.GzipFile(fileobj=stream)  # type: ignore[return-value]
    return stream


def guess_format(filename: str) -> str:
    name = filename.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    return "jsonl"


def text_lines(binary: IO[bytes], limits: ReadLimits) -> Iterator[str]:
    """The file's lines as text (UTF-8, a leading BOM dropped), each read with a bounded
    `readline`, so a CSV row is never held past the line limit."""
    line = 0
    while raw := binary.readline(limits.max_line_bytes + 1):
        line += 1
        if len(raw) > limits.max_line_bytes:
            raise line_error(line, f"is longer than {limits.max_line_bytes} bytes")
        text = raw.decode("utf-8")
        yield text.removeprefix("\ufeff") if line == 1 else text


def json_records(
    binary: IO[bytes], format: str | None, limits: ReadLimits
) -> Iterator[ParsedPrompt | SkippedLine]:
    records = 0
    line = 0
    # readline with a limit: a line longer than the limit is refused without being held whole.
    while raw := binary.readline(limits.max_line_bytes + 1):
        line += 1
        if len(raw) > limits.max_line_bytes:
            raise line_error(line, f"is longer than {limits.max_line_bytes} bytes")
        if not raw.strip():
            continue
        records += 1
        if records > limits.max_records:
            raise line_error(line, f"is past the limit of {limits.max_records} prompts a file")
        try:
            row = orjson.loads(raw)  # 4x faster than json's
        except orjson.JSONDecodeError:
            # json's parser decides what orjson refuses (NaN, integers past 64 bits, deep
            # nesting), and names the problem as it always has.
            row = _standard_json(raw, line)
        if not isinstance(row, dict):
            raise line_error(line, "must be a JSON object")
        if format is None:
            format = "hh" if "chosen" in row and "completions" not in row else "preflab"
        yield hh_record(line, row) if format == "hh" else preflab_record(line, row)


def _standard_json(raw: bytes, line: int) -> Any:
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise line_error(line, "is not valid UTF-8") from None
    except json.JSONDecodeError as error:
        raise line_error(line, f"is not valid JSON ({error.msg}, column {error.colno})") from None
    except RecursionError:
        raise line_error(line, "is nested too deeply to be a prompt") from None


def read_records(
    stream: IO[bytes],
    *,
    filename: str,
    format: str | None = None,
    limits: ReadLimits = ReadLimits(),
) -> Generator[ParsedPrompt | SkippedLine, None, None]:
    """Parse an import file, line by line; `format` is one of FORMATS or None to tell from it.

    Raises ValidationError naming the line on the first malformed line, or on the first that
    passes `limits`. Checks of what a record holds (number of completions, lengths, roles) are
    `validate_record`'s.
    """
    if format is not None and format not in FORMATS:
        raise ValidationError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    # A buffer gives `peek`; it is detached at the end so that the caller's stream stays open.
    wrapper = None if hasattr(stream, "peek") else io.BufferedReader(stream)  # type: ignore[arg-type,type-var]
    capped = _Capped(open_binary(wrapper or stream), limits.max_bytes)
    binary: IO[bytes] = io.BufferedReader(capped)  # type: ignore[arg-type]
    try:
        if format == "csv" or (format is None and guess_format(filename) == "csv"):
            try:
                yield from csv_records(text_lines(binary, limits), limits)
            except UnicodeDecodeError:
                raise ValidationError("the CSV file is not valid UTF-8") from None
            except csv.Error as error:
                raise ValidationError(f"the CSV file is malformed: {error}") from None
        else:
            yield from json_records(binary, format, limits)
    except (OSError, EOFError, zlib.error) as error:
        # gzip raises these for a truncated or corrupt archive.
        raise ValidationError(f"the file cannot be read: {error}") from None
    finally:
        if wrapper is not None:
            wrapper.detach()


def messages_problem(messages: list[dict[str, str]], *, max_text_chars: int) -> str | None:
    """What makes `messages` no prompt PrefLab takes (imports and scoring alike), or None."""
    if not messages:
        return "field 'prompt' has no messages"
    for index, message in enumerate(messages):
        if message["role"] not in ROLES:
            return f"field 'prompt[{index}].role' is {message['role']!r}; use one of " + ", ".join(
                ROLES
            )
        if len(message["content"]) > max_text_chars:
            return f"field 'prompt[{index}].content' is longer than {max_text_chars} characters"
        if "\x00" in message["content"]:
            return f"field 'prompt[{index}].content' {HOLDS_NUL}"
    if not any(m["content"].strip() for m in messages):
        return "field 'prompt' is empty"
    if messages[-1]["role"] != "user":
        return "field 'prompt': the conversation must end with a user message to reply to"
    return None


def validate_record(record: ParsedPrompt, *, max_text_chars: int) -> None:
    """Check a parsed record against PrefLab's limits; fills in a missing prompt id."""
    line = record.line
    problem = messages_problem(record.messages, max_text_chars=max_text_chars)
    if problem is not None:
        raise line_error(line, problem)
    count = len(record.completions)
    if not MIN_COMPLETIONS <= count <= MAX_COMPLETIONS:
        raise line_error(
            line,
            f"field 'completions' has {count}; a prompt needs {MIN_COMPLETIONS} to "
            f"{MAX_COMPLETIONS}",
        )
    seen: set[str] = set()
    for index, completion in enumerate(record.completions):
        where = f"field 'completions[{index}]'"
        if len(completion.text) > max_text_chars:
            raise line_error(line, f"{where} is longer than {max_text_chars} characters")
        if len(completion.external_id) > MAX_ID_CHARS:
            raise line_error(line, f"{where}.id is longer than {MAX_ID_CHARS} characters")
        for name, value in (
            ("text", completion.text),
            ("id", completion.external_id),
            ("model", completion.model_name),
        ):
            if "\x00" in value:
                raise line_error(line, f"{where}.{name} {HOLDS_NUL}")
        if completion.external_id in seen:
            raise line_error(
                line, f"{where} repeats the id {completion.external_id!r} (or the same text)"
            )
        seen.add(completion.external_id)
    if not record.external_id:
        record.external_id = "p-" + record.content_hash[:16]
    if len(record.external_id) > MAX_ID_CHARS:
        raise line_error(line, f"field 'id' is longer than {MAX_ID_CHARS} characters")
    if "\x00" in record.external_id:
        raise line_error(line, f"field 'id' {HOLDS_NUL}")
    if record.gold_order is not None:
        gold = record.gold_order
        if not orders.is_order_of(gold, str) or orders.placement_problems(gold, seen):
            raise line_error(
                line,
                "field 'gold_order' must list every completion id exactly once "
                f"({', '.join(sorted(seen))})",
            )
