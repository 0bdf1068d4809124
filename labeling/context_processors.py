"""What the signed-in user may do somewhere, for the navigation: `can.review`, `can.manage`,
`can.administer`, read lazily (`labeling.access.abilities_of`, on the pages that ask)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from labeling.access import abilities_of


def abilities(request: HttpRequest) -> dict[str, Any]:
    return {"can": SimpleLazyObject(lambda: abilities_of(request.user))}
