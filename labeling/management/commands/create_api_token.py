from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.authtoken.models import Token

from labeling.models import DEFAULT_WORKSPACE_SLUG, Role, Workspace
from labeling.services.workspaces import set_role


class Command(BaseCommand):
    help = "Print the API token of a user, making it if needed (Authorization: Token <key>)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--service",
            action="store_true",
            help="Make the user (created if new) a service account of --workspace: read, export "
            "and score there, no labeling.",
        )
        parser.add_argument(
            "--workspace",
            default=DEFAULT_WORKSPACE_SLUG,
            help="With --service: the workspace's slug (default: %(default)s).",
        )
        parser.add_argument("--rotate", action="store_true", help="Replace an existing token.")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        username = options["username"]
        user = User.objects.filter(username=username).first()
        if user is None:
            if not options["service"]:
                raise CommandError(
                    f"No user {username!r}; add --service to make a service account."
                )
            user = User.objects.create_user(username=username)
            user.set_unusable_password()
            user.save()
        if options["service"]:
            workspace = Workspace.objects.filter(slug=options["workspace"]).first()
            if workspace is None:
                raise CommandError(f"No workspace {options['workspace']!r}.")
            set_role(workspace=workspace, user=user, role=Role.SERVICE)
        if options["rotate"]:
            Token.objects.filter(user=user).delete()
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
