from __future__ import annotations

from django.urls import path

from rewards import views

app_name = "rewards"
urlpatterns = [
    path("runs/", views.run_list, name="runs"),
    path("runs/<int:run_id>/", views.run_detail, name="run"),
    path("runs/<int:run_id>/retry/", views.run_retry, name="run-retry"),
    path("runs/<int:run_id>/plots/<slug:name>.svg", views.run_plot, name="run-plot"),
    path("models/<int:version>/activate/", views.model_activate, name="model-activate"),
    path("models/<int:version>/files/<slug:kind>/", views.model_download, name="model-download"),
]
