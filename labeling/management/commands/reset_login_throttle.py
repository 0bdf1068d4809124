from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.accounts import reset_login_failures


class Command(BaseCommand):
    help = "Forget the failed sign-ins of an account and/or an address, so they may sign in again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", nargs="?", default="")
        parser.add_argument("--address", default="", help="A client address, e.g. 203.0.113.7.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["username"] and not options["address"]:
            raise CommandError("Name a username, an --address, or both.")
        reset_login_failures(username=options["username"], address=options["address"])
        self.stdout.write(self.style.SUCCESS("Failed sign-ins forgotten."))
