"""Recording the audit trail (`AuditEvent`): one call beside each change it covers, in the
same transaction, so a change that rolls back leaves no record and none goes unrecorded."""

from __future__ import annotations

import hashlib
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
