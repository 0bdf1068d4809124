from __future__ import annotations

from django.urls import path

from labeling import views

app_name = "labeling"
urlpatterns = [
    path("", views.home, name="home"),
    path("datasets/<slug:slug>/next/", views.next_task, name="next"),
    path("tasks/<int:assignment_id>/", views.rank, name="rank"),
    path("tasks/<int:assignment_id>/submit/", views.submit, name="submit"),
    path("tasks/<int:assignment_id>/skip/", views.skip, name="skip"),
]
