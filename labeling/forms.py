"""The ranking form (a rank, ratings and flags per completion), the skip and import forms, and
the throttled sign-in and password reset forms."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from string import ascii_uppercase
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm
from django.http import HttpRequest

from labeling import accounts, orders
from labeling.formats import FORMATS
from labeling.models import (
    RATING_MAX,
    RATING_MIN,
    Assignment,
    Completion,
    Criterion,
    Flag,
    Strength,
)
from labeling.services import password_reset

# helpful and honest share their first letter, so each criterion has its own key.
CRITERION_KEYS = {"helpful": "h", "honest": "o", "harmless": "a"}
RATING_CHOICES = [(value, str(value)) for value in range(RATING_MIN, RATING_MAX + 1)]


@dataclass
class Card:
    letter: str
    number: int
    completion: Completion
    rank: forms.BoundField
    ratings: list[tuple[str, forms.BoundField]]
    flags: forms.BoundField


class RankingForm(forms.Form):
    """Ranks are numbers 1..K, best first; completions given the same number are tied."""

    request_id = forms.UUIDField(widget=forms.HiddenInput)
    seconds_spent = forms.FloatField(required=False, min_value=0, widget=forms.HiddenInput)
    strength = forms.ChoiceField(
        choices=Strength.choices,
        required=False,
        widget=forms.RadioSelect,
        label="How much better is your first choice?",
    )
    all_unacceptable = forms.BooleanField(required=False, label="All of them are unacceptable")
    rationale = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Rationale (optional)",
        max_length=10_000,
    )

    def __init__(self, *args: Any, assignment: Assignment, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {"request_id": uuid.uuid4()})
        super().__init__(*args, **kwargs)
        self.assignment = assignment
        prompt = assignment.prompt
        self.criteria = prompt.dataset.criteria
        self.completions = assignment.display_completions()
        count = len(self.completions)
        for completion in self.completions:
            cid = completion.pk
            self.fields[f"rank_{cid}"] = forms.IntegerField(
                min_value=1,
                max_value=count,
                label="Rank",
                widget=forms.NumberInput(attrs={"class": "rank-input"}),
                error_messages={"required": "Give every completion a rank."},
            )
            for criterion in self.criteria:
                self.fields[f"{criterion}_{cid}"] = forms.TypedChoiceField(
                    choices=RATING_CHOICES,
                    coerce=int,
                    widget=forms.RadioSelect,
                    label=Criterion(criterion).label,
                    error_messages={"required": f"Rate every completion on {criterion}."},
                )
            self.fields[f"flags_{cid}"] = forms.MultipleChoiceField(
                choices=Flag.choices,
                required=False,
                widget=forms.CheckboxSelectMultiple,
                label="Flags",
            )
        if count != 2:
            del self.fields["strength"]

    @property
    def criterion_keys(self) -> list[tuple[str, str]]:
        return [(criterion, CRITERION_KEYS[criterion]) for criterion in self.criteria]

    def cards(self) -> list[Card]:
        return [
            Card(
                letter=ascii_uppercase[index],
                number=index + 1,
                completion=completion,
                rank=self[f"rank_{completion.pk}"],
                ratings=[(c, self[f"{c}_{completion.pk}"]) for c in self.criteria],
                flags=self[f"flags_{completion.pk}"],
            )
            for index, completion in enumerate(self.completions)
        ]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if self.errors:
            return data
        ranks = {c.pk: data[f"rank_{c.pk}"] for c in self.completions}
        return {
            "order": orders.from_ranks(ranks),
            "ratings": {
                c.pk: {criterion: data[f"{criterion}_{c.pk}"] for criterion in self.criteria}
                for c in self.completions
            }
            if self.criteria
            else {},
            "flags": {c.pk: data[f"flags_{c.pk}"] for c in self.completions},
            "request_id": data["request_id"],
            "seconds_spent": data.get("seconds_spent"),
            "all_unacceptable": data["all_unacceptable"],
            "rationale": data["rationale"],
            "strength": data.get("strength") or "",
        }


class ThrottledLoginMixin:
    """Sign-in that is refused, whatever the password, once the account or the client's address
    has used up its failed attempts (`labeling.accounts.begin_login_attempt`)."""

    request: HttpRequest | None
    cleaned_data: dict[str, Any]
    throttled_message = (
        "Too many failed sign-ins for this account or from this address. Try again in "
        "%(minutes)d minutes, or ask an admin to reset it."
    )

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""
        address = accounts.client_address(self.request) if self.request else ""
        if not accounts.begin_login_attempt(username, address):
            raise forms.ValidationError(
                self.throttled_message,
                code="throttled",
                params={"minutes": -(-settings.PREFLAB_LOGIN_WINDOW_SECONDS // 60)},
            )
        data: dict[str, Any] = super().clean()  # type: ignore[misc]
        # An empty password authenticates nobody and raises nothing here: still a failure.
        if self.get_user() is not None:  # type: ignore[attr-defined]
            accounts.login_succeeded(username, address)
        return data


class ThrottledAuthenticationForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass


class ThrottledPasswordResetForm(PasswordResetForm):
    """Django's "Forgot your password?" form, whose e-mails a worker sends, refused for a while
    once the e-mail address or the client's address asked too often
    (`labeling.accounts.begin_password_reset`). Whether an account has the address shows
    nowhere: the same page follows either way."""

    throttled_message = (
        "Too many password reset requests for this e-mail address or from this network. "
        "Try again in %(minutes)d minutes, or ask an admin."
    )

    def __init__(self, *args: Any, request: HttpRequest, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request = request

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        email = data.get("email")
        address = accounts.client_address(self.request)
        if email and not accounts.begin_password_reset(email, address):
            raise forms.ValidationError(
                self.throttled_message,
                code="throttled",
                params={"minutes": -(-settings.PREFLAB_PASSWORD_RESET_WINDOW_SECONDS // 60)},
            )
        return data

    def save(self, **kwargs: Any) -> None:  # type: ignore[override]
        """Queue the e-mail to each active account with this address and a usable password
        (Django's `get_users`)."""
        for user in self.get_users(self.cleaned_data["email"]):
            password_reset.request_password_reset(
                user=user, domain=self.request.get_host(), use_https=self.request.is_secure()
            )


class SkipForm(forms.Form):
    REASONS = [
        ("unsure", "I am not sure how to judge this"),
        ("distressing", "The content is too distressing for me"),
        ("broken", "The prompt or completions are broken"),
        ("expertise", "It needs expertise I do not have"),
    ]
    reason = forms.ChoiceField(choices=REASONS)


class ImportForm(forms.Form):
    file = forms.FileField(help_text="PrefLab JSON Lines, Anthropic HH JSON Lines or CSV; .gz too.")
    format = forms.ChoiceField(
        choices=[("", "Tell from the file")] + [(f, f) for f in FORMATS], required=False
    )
    strict = forms.BooleanField(
        required=False,
        help_text="Refuse the whole file if an HH pair cannot be split, instead of skipping it.",
    )

    def clean_format(self) -> str | None:
        return self.cleaned_data["format"] or None


class GoldOrderForm(forms.Form):
    """A gold prompt's expected order typed as text: `c2 > c1 = c3` (best first, `=` ties)."""

    order = forms.CharField(
        max_length=2000,
        widget=forms.TextInput(attrs={"size": 40}),
        help_text="Completion ids best first: 'c2 > c1 = c3' (= ties two completions).",
    )

    def clean_order(self) -> orders.NamedOrder:
        try:
            return orders.from_text(self.cleaned_data["order"])
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None
