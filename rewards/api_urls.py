from __future__ import annotations

from django.urls import path

from rewards import api

app_name = "rewards-api"
urlpatterns = [
    path("reward-models/", api.RewardModelList.as_view(), name="models"),
    path("reward-models/<int:version>/", api.reward_model_detail, name="model"),
    path("reward-models/<int:version>/score", api.score, name="score"),
    path("reward-models/<int:version>/artifact", api.artifact, name="artifact"),
    path("training-runs/", api.start_training_run, name="runs"),
    path("training-runs/<int:run_id>/", api.training_run_detail, name="run"),
    path("datasets/<slug:slug>/predictions/", api.predictions, name="predictions"),
]
