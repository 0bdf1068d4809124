"""Sending a reward model's files, for the staff pages and the API alike."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.http import FileResponse, Http404

from rewards.models import RewardModel


def artifact_response(model: RewardModel, kind: str) -> FileResponse:
    """The model's `kind` file (onnx, skops, featurizer, card) as a download with its SHA-256."""
    if kind not in model.files:
        raise Http404(f"No such file; use one of {', '.join(model.files)}.")
    path = Path(settings.MEDIA_ROOT) / model.directory / model.files[kind]["name"]
    response = FileResponse(
        path.open("rb"), as_attachment=True, filename=f"reward-model-v{model.version}-{path.name}"
    )
    response["X-Checksum-SHA256"] = model.files[kind]["sha256"]
    return response
