"""Recording the audit trail (`AuditEvent`): one call beside each change it covers, in the
same transaction, so a change that rolls back leaves no record and none goes unrecorded."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

from labeling.models import AuditEvent, Dataset


def token_fingerprint(key: str) -> str:
    """A token's stable name in the trail that cannot be used as the token."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def record(
    *,
    action: str,
    workspace_id: int | None,
    actor: Any = None,
    dataset: Dataset | None = None,
    request: Any = None,
    **details: Any,
) -> AuditEvent:
    """Add an event: who (`actor`, and through `request` whether by token, which, or by a
    page), what (`action`, `details`: plain JSON values), where (workspace, dataset)."""
    if workspace_id is None:
        raise ValueError("an audit event belongs to a workspace")
    token = getattr(request, "auth", None) if request is not None else None
    key = getattr(token, "key", None)
    user = actor if actor is not None and getattr(actor, "pk", None) else None
    return AuditEvent.objects.create(
        workspace_id=workspace_id,
        dataset=dataset,
        actor=user,
        actor_name=user.get_username() if user else "",
        via="token" if key else ("session" if request is not None else "system"),
        token=token_fingerprint(key) if key else "",
        action=action,
        details=details,
    )


class ExportTally:
    """How many rows of an export have been handed to its response so far."""

    def __init__(self) -> None:
        self.rows = 0

    def lines(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """JSON Lines chunks as they come, counted by their newlines (JSON escapes any inside
        a value): no work per row beyond what the chunk's bytes already cost."""
        for chunk in chunks:
            self.rows += chunk.count(b"\n")
            yield chunk

    def records(self, chunks: Iterable[list[Any]]) -> Iterator[list[Any]]:
        """Chunks of rows (dicts for Parquet) as they come, counted by their length."""
        for chunk in chunks:
            self.rows += len(chunk)
            yield chunk


def recorded_export(
    body: Iterable[bytes],
    *,
    tally: ExportTally,
    dataset: Dataset,
    request: Any,
    **details: Any,
) -> Iterator[bytes]:
    """The response body of an export, recording the pull (`EXPORT_PULLED`, with `details` and
    the rows `tally` counted) once it ends: `complete` when every row was sent, not when the
    client went away first (the server closes the body, which ends this generator at its
    `yield`). One INSERT at the end, outside the export's own queries. Wrap the encoded body
    (gzip, Parquet) with this, and the rows under the encoder with `tally`."""
    complete = False
    try:
        yield from body
        complete = True
    finally:
        record(
            action=AuditEvent.Action.EXPORT_PULLED,
            workspace_id=dataset.workspace_id,
            actor=request.user,
            dataset=dataset,
            request=request,
            rows=tally.rows,
            complete=complete,
            **details,
        )
