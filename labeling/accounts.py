"""Who an account is to PrefLab: its role, and the pseudonym that stands for it in exports.

Three roles: staff (manage everything), service accounts (training pipelines: read, export and
score; members of the `service` group) and labelers (every other active user: their own tasks).
The API's permission classes (`labeling.permissions`) and the services both ask here.
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User

SERVICE_GROUP = "service"


def is_service(user: User) -> bool:
    return user.groups.filter(name=SERVICE_GROUP).exists()


def pseudonym(user_id: int) -> str:
    """A labeler's stable id in exports: a keyed hash, never the username."""
    key = settings.PREFLAB_PSEUDONYM_KEY.encode()
    return "lab-" + hmac.new(key, str(user_id).encode(), hashlib.sha256).hexdigest()[:16]


def labeler_with_pseudonym(wanted: str) -> int | None:
    """The id of the user whose pseudonym is `wanted`, or None. A keyed hash cannot be turned
    back, so this hashes every user's id."""
    users = get_user_model().objects.order_by("pk").values_list("pk", flat=True)
    return next((user_id for user_id in users.iterator() if pseudonym(user_id) == wanted), None)
