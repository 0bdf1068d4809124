"""How production stores static files: WhiteNoise's compressed files with content hashes."""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    """A page links a file that collectstatic has not stored (DEBUG off before the first
    `make release`, say) by its plain name instead of failing with a 500."""

    def stored_name(self, name: str) -> str:
        try:
            return super().stored_name(name)
        except ValueError:
            return name
