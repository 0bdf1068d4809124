"""The ranking form (a rank, ratings and flags per completion), the skip and import forms, the
throttled sign-in and password reset forms, and the workspace pages' member and audit forms."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from string import ascii_uppercase
from typing import Any, cast

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, QueryDict

from labeling import accounts, orders
from labeling.formats import FORMATS, MAX_COMPLETIONS, MAX_ID_CHARS
from labeling.models import (
    Asked,
    Assignment,
    AuditEvent,
    Completion,
    Dataset,
    Flag,
    RatingCriterion,
    Role,
    Strength,
)
from labeling.services import leaderboard, password_reset

# The ranking page's own keys (rank.js): a criterion's shortcut is never one of them.
PAGE_KEYS = set("cefgjkmrstx")


def shortcuts(criteria: list[RatingCriterion]) -> dict[str, str]:
    """criterion key -> the letter that rates it on the ranking page: the first letter of its
    key that no page key or earlier criterion has (helpful h, honest o, harmless a); criteria
    left without one are rated with `e` and digits."""
    taken = set(PAGE_KEYS)
    found = {}
    for criterion in criteria:
        letter = next((c for c in criterion.key if c.isalpha() and c not in taken), None)
        if letter is not None:
            taken.add(letter)
            found[criterion.key] = letter
    return found


@dataclass
class Card:
    letter: str
    number: int
    completion: Completion
    rank: forms.BoundField
    ratings: list[tuple[RatingCriterion, forms.BoundField]]
    flags: forms.BoundField

    @property
    def errors(self) -> list[str]:
        """What is wrong with this response's fields, for the card and the summary."""
        fields = [self.rank, *(field for _, field in self.ratings), self.flags]
        return [str(error) for field in fields for error in field.errors]


class RankingForm(forms.Form):
    """Ranks are numbers 1..K, best first; completions given the same number are tied.

    The dataset says whether ratings and a pair's strength are required, optional or off. Error
    messages name the response they concern ("Response B: rate honest."), and the page shows
    each beside its field and once in a summary per response."""

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

    VOTES = {"1": (1, 2), "2": (2, 1), "tie": (1, 1)}

    def __init__(self, *args: Any, assignment: Assignment, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {"request_id": uuid.uuid4()})
        super().__init__(*args, **kwargs)
        self.assignment = assignment
        dataset = assignment.prompt.dataset
        self.criteria = dataset.rated_criteria
        self.ratings_required = dataset.ratings == Asked.REQUIRED
        self.strength_asked = dataset.strength
        self.completions = assignment.display_completions()
        count = len(self.completions)
        self.votes = count == 2 and dataset.votes
        self.letters = {c.pk: ascii_uppercase[i] for i, c in enumerate(self.completions)}
        for completion in self.completions:
            cid, letter = completion.pk, self.letters[completion.pk]
            self.fields[f"rank_{cid}"] = forms.IntegerField(
                min_value=1,
                max_value=count,
                label=f"Response {letter}",
                widget=forms.NumberInput(attrs={"class": "rank-input"}),
                error_messages={
                    "required": "Give it a rank.",
                    "min_value": f"A rank is a number from 1 to {count}.",
                    "max_value": f"A rank is a number from 1 to {count}.",
                    "invalid": f"A rank is a number from 1 to {count}.",
                },
            )
            for criterion in self.criteria:
                self.fields[f"{criterion.key}_{cid}"] = forms.TypedChoiceField(
                    choices=[(value, str(value)) for value in criterion.values],
                    coerce=int,
                    empty_value=None,
                    required=self.ratings_required,
                    widget=forms.RadioSelect,
                    label=criterion.label,
                    error_messages={
                        "required": f"Rate {criterion.label.lower()}.",
                        "invalid_choice": f"Rate {criterion.label.lower()} from "
                        f"{criterion.scale_min} to {criterion.scale_max}.",
                    },
                )
            self.fields[f"flags_{cid}"] = forms.MultipleChoiceField(
                choices=Flag.choices,
                required=False,
                widget=forms.CheckboxSelectMultiple,
                label="Flags",
            )
        if count != 2 or self.strength_asked == Asked.OFF:
            del self.fields["strength"]
        if self.votes and self.is_bound and self.data.get("vote") in self.VOTES:
            # A vote button ("Response A is better", "Tie"): the ranks it means.
            data = cast(QueryDict, self.data).copy()  # a mutable copy, flags' lists kept
            for completion, rank in zip(
                self.completions, self.VOTES[str(data["vote"])], strict=True
            ):
                data[f"rank_{completion.pk}"] = str(rank)
            self.data = data

    @property
    def criterion_keys(self) -> list[tuple[RatingCriterion, str]]:
        """Each criterion with a shortcut key, and the key (the page's key map)."""
        keys = shortcuts(self.criteria)
        return [(c, keys[c.key]) for c in self.criteria if c.key in keys]

    def criteria_script(self) -> list[dict[str, Any]]:
        """What rank.js needs of the criteria (`json_script`): key, label, scale, shortcut."""
        keys = shortcuts(self.criteria)
        return [
            {
                "key": c.key,
                "label": c.label,
                "min": c.scale_min,
                "max": c.scale_max,
                "shortcut": keys.get(c.key),
            }
            for c in self.criteria
        ]

    def cards(self) -> list[Card]:
        return [
            Card(
                letter=self.letters[completion.pk],
                number=index + 1,
                completion=completion,
                rank=self[f"rank_{completion.pk}"],
                ratings=[(c, self[f"{c.key}_{completion.pk}"]) for c in self.criteria],
                flags=self[f"flags_{completion.pk}"],
            )
            for index, completion in enumerate(self.completions)
        ]

    def error_summary(self) -> list[str]:
        """One line per response with everything missing there, then the form's own errors."""
        lines = [
            f"Response {card.letter}: {' '.join(card.errors)}"
            for card in self.cards()
            if card.errors
        ]
        lines += [str(error) for error in self.non_field_errors()]
        for name in ("strength", "rationale", "request_id", "seconds_spent", "all_unacceptable"):
            if name in self.fields:
                lines += [f"{self.fields[name].label}: {error}" for error in self[name].errors]
        return lines

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if self.errors:
            return data
        ranks = {c.pk: data[f"rank_{c.pk}"] for c in self.completions}
        order = orders.from_ranks(ranks)
        strength = data.get("strength") or ""
        if len(order) == 1:
            strength = ""  # a tie has no strength, whatever a stale radio still says
        elif "strength" in self.fields and self.strength_asked == Asked.REQUIRED and not strength:
            self.add_error("strength", "Say how much better your first choice is.")
            return data
        return {
            "order": order,
            "ratings": {
                c.pk: {
                    criterion.key: data[f"{criterion.key}_{c.pk}"]
                    for criterion in self.criteria
                    if data.get(f"{criterion.key}_{c.pk}") is not None
                }
                for c in self.completions
            }
            if self.criteria
            else {},
            "flags": {c.pk: data[f"flags_{c.pk}"] for c in self.completions},
            "request_id": data["request_id"],
            "seconds_spent": data.get("seconds_spent"),
            "all_unacceptable": data["all_unacceptable"],
            "rationale": data["rationale"],
            "strength": strength,
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
        # Room for the most completions, each with the longest id written with the longest
        # escapes (a control character is six characters as JSON).
        max_length=MAX_COMPLETIONS * (6 * MAX_ID_CHARS + 5),
        widget=forms.TextInput(attrs={"size": 40}),
        help_text=(
            "Completion ids best first: 'c2 > c1 = c3' (= ties two completions); an id with a "
            'space, >, = or a quote is written in double quotes: "a > b" > c1.'
        ),
    )

    def clean_order(self) -> orders.NamedOrder:
        try:
            return orders.from_text(self.cleaned_data["order"])
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None


class AdjudicationForm(forms.Form):
    """A reviewer's final order: a rank 1..K per completion (the same number ties), or the
    labelers' consensus (`action=accept`), with a note and whether to make it gold too."""

    action = forms.ChoiceField(choices=[("save", "Save"), ("accept", "Accept the consensus")])
    note = forms.CharField(
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Note (why this order)",
    )
    gold = forms.BooleanField(required=False, label="Also make it a gold prompt with this order")

    def __init__(self, *args: Any, completions: list[Completion], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.completions = completions
        count = len(completions)
        message = f"A rank is a number from 1 to {count}."
        for completion in completions:
            self.fields[f"rank_{completion.pk}"] = forms.IntegerField(
                min_value=1,
                max_value=count,
                required=False,
                label=completion.external_id,
                widget=forms.NumberInput(attrs={"class": "rank-input"}),
                error_messages={"min_value": message, "max_value": message, "invalid": message},
            )

    def rank_fields(self) -> list[tuple[Completion, forms.BoundField]]:
        return [(c, self[f"rank_{c.pk}"]) for c in self.completions]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("action") != "save":
            return data
        ranks = {c.pk: data.get(f"rank_{c.pk}") for c in self.completions}
        if any(rank is None for rank in ranks.values()):
            if not self.errors:
                raise forms.ValidationError(
                    "Give every completion a rank, or accept the consensus."
                )
            return data
        data["order"] = orders.from_ranks(cast(dict[int, int], ranks))
        return data


class LeaderboardForm(forms.Form):
    """The leaderboard page's choices: datasets to pool with the page's own (slugs from the
    checkboxes, or comma-separated as in the API's `?datasets=a,b`) and bootstrap rounds."""

    datasets = forms.CharField(required=False, max_length=2000)
    rounds = forms.IntegerField(
        required=False,
        min_value=settings.PREFLAB_LEADERBOARD_MIN_ROUNDS,
        max_value=settings.PREFLAB_LEADERBOARD_MAX_ROUNDS,
    )

    def __init__(self, query: QueryDict, *, slug: str, among: QuerySet[Dataset]) -> None:
        data = {
            "datasets": ",".join(query.getlist("datasets")),
            "rounds": query.get("rounds", ""),
        }
        super().__init__(data)
        self.slug = slug
        self.among = among

    def clean_rounds(self) -> int:
        rounds = self.cleaned_data["rounds"]
        return settings.PREFLAB_LEADERBOARD_ROUNDS if rounds is None else int(rounds)

    def clean_datasets(self) -> list[Dataset]:
        try:
            return leaderboard.parse_datasets(
                slug=self.slug, extra=self.cleaned_data["datasets"], among=self.among
            )
        except ValidationError as error:
            raise forms.ValidationError(error.message_dict["datasets"]) from None


class MemberForm(forms.Form):
    """Add a member to a workspace, or change a member's role (the workspaces page)."""

    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices)

    def clean_username(self) -> User:
        username = self.cleaned_data["username"]
        user = User.objects.filter(username=username).first()
        if user is None:
            raise forms.ValidationError(f"No user is named {username!r}.")
        return user


class AuditFilterForm(forms.Form):
    """The audit page's filters (a query string), and the id of the last event seen."""

    action = forms.ChoiceField(
        choices=[("", "Any action"), *AuditEvent.Action.choices], required=False
    )
    dataset = forms.ChoiceField(required=False)
    before = forms.IntegerField(min_value=1, required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, datasets: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        dataset = cast(forms.ChoiceField, self.fields["dataset"])
        dataset.choices = [("", "Any dataset"), *((slug, slug) for slug in datasets)]
