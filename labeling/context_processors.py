"""What the signed-in user may do somewhere, for the navigation: `can.review`, `can.manage`,
`can.administer`, read lazily (one query, on the pages that ask)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from labeling.models import ROLES_ABLE_TO, Ability, Membership


def abilities_of(user: Any) -> dict[str, bool]:
    if not (user.is_authenticated and user.is_active):
        return {}
    if user.is_superuser:
        return {ability: True for ability in Ability.values}
    roles = set(Membership.objects.filter(user=user).values_list("role", flat=True))
    return {ability: bool(roles & ROLES_ABLE_TO[ability]) for ability in Ability.values}


def abilities(request: HttpRequest) -> dict[str, Any]:
    return {"can": SimpleLazyObject(lambda: abilities_of(request.user))}
