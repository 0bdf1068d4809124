"""The admin's user list for PrefLab: the labelers' rankings kept (never deleted with the account),
exclusion and reinstatement, and the password reset link action. `labeling.admin` imports this
module so the admin site registers it."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from labeling.admin import KeepsRankings, apply_to_each
from labeling.errors import errors_text
from labeling.services import exclusion, password_reset, slots

admin.site.unregister(User)


@admin.register(User)
class LabelerAdmin(KeepsRankings, UserAdmin):
    """Django's user admin (its change page links to the form that sets a password) with the
    label-quality actions, exclude and reinstate labelers, and sending password reset links."""

    actions = ["exclude_labelers", "reinstate_labelers", "send_password_reset_links"]

    def delete_model(self, request: HttpRequest, obj: User) -> None:
        """A user with no rankings may be deleted (`KeepsRankings`); their live leases go with
        them, so those prompts' slots are counted again."""
        prompt_ids = list(obj.assignments.values_list("prompt_id", flat=True))
        with transaction.atomic():
            super().delete_model(request, obj)
            slots.recount_slots(prompt_ids)

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        """Unticking *Active* excludes the labeler, ticking it reinstates them: the same rules
        and effects as the actions."""
        if not (change and "is_active" in form.changed_data):
            super().save_model(request, obj, form, change)
            return
        active = obj.is_active
        obj.is_active = not active
        super().save_model(request, obj, form, change)
        by = request.user
        try:
            if active:
                exclusion.reinstate_labeler(labeler=obj, by=by)  # type: ignore[arg-type]
            else:
                exclusion.exclude_labeler(labeler=obj, by=by)  # type: ignore[arg-type]
        except ValidationError as error:
            messages.error(request, " ".join(errors_text(error)))

    @admin.action(description="Exclude: deactivate and leave their rankings out")
    def exclude_labelers(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        by = request.user
        apply_to_each(
            request,
            queryset.filter(is_active=True),
            lambda user: exclusion.exclude_labeler(labeler=user, by=by),  # type: ignore[arg-type]
            done="Excluded (nothing was deleted):",
        )

    @admin.action(description="Reinstate: their account and rankings count again")
    def reinstate_labelers(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        by = request.user
        apply_to_each(
            request,
            queryset.filter(is_active=False),
            lambda user: exclusion.reinstate_labeler(labeler=user, by=by),  # type: ignore[arg-type]
            done="Reinstated:",
        )

    @admin.action(description="Send a password reset link")
    def send_password_reset_links(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        """The e-mail of the "Forgot your password?" form; accounts without an address are
        named in an error message."""
        domain, use_https = request.get_host(), request.is_secure()
        apply_to_each(
            request,
            queryset,
            lambda user: password_reset.request_password_reset(
                user=user, domain=domain, use_https=use_https
            ),
            done="A password reset link is on its way to:",
        )
