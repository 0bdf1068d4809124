from __future__ import annotations

from django.urls import path

from labeling import pool_views, review_views, views, workspace_views

app_name = "labeling"
urlpatterns = [
    path("", views.home, name="home"),
    path("datasets/<slug:slug>/next/", views.next_task, name="next"),
    path("datasets/<slug:slug>/done/", views.no_tasks, name="done"),
    path("tasks/<int:assignment_id>/", views.rank, name="rank"),
    path("tasks/<int:assignment_id>/submit/", views.submit, name="submit"),
    path("tasks/<int:assignment_id>/skip/", views.skip, name="skip"),
    path("quality/", views.quality_index, name="quality-index"),
    path("quality/<slug:slug>/", views.quality_dashboard, name="quality"),
    path("quality/<slug:slug>/refresh/", views.quality_refresh, name="quality-refresh"),
    path("quality/<slug:slug>/leaderboard/", views.model_leaderboard, name="leaderboard"),
    path(
        "quality/<slug:slug>/prompts/<int:prompt_id>/",
        views.quality_prompt,
        name="quality-prompt",
    ),
    path(
        "quality/<slug:slug>/prompts/<int:prompt_id>/gold/",
        views.quality_gold,
        name="quality-gold",
    ),
    path("review/", review_views.review_index, name="review-index"),
    path("review/<slug:slug>/", review_views.review_queue, name="review-queue"),
    path(
        "review/<slug:slug>/prompts/<int:prompt_id>/",
        review_views.review_prompt,
        name="review-prompt",
    ),
    path(
        "review/<slug:slug>/prompts/<int:prompt_id>/adjudicate/",
        review_views.review_adjudicate,
        name="review-adjudicate",
    ),
    path(
        "quality/<slug:slug>/labelers/<int:user_id>/exclude/",
        views.labeler_exclusion,
        {"action": "exclude"},
        name="labeler-exclude",
    ),
    path(
        "quality/<slug:slug>/labelers/<int:user_id>/reinstate/",
        views.labeler_exclusion,
        {"action": "reinstate"},
        name="labeler-reinstate",
    ),
    path("workspaces/", workspace_views.workspace_index, name="workspaces"),
    path(
        "workspaces/<slug:slug>/members/",
        workspace_views.member_set,
        name="workspace-member-set",
    ),
    path(
        "workspaces/<slug:slug>/members/<int:user_id>/remove/",
        workspace_views.member_remove,
        name="workspace-member-remove",
    ),
    path("workspaces/<slug:slug>/audit/", workspace_views.workspace_audit, name="workspace-audit"),
    path("datasets/<slug:slug>/pool/", pool_views.dataset_pool, name="pool"),
    path("workspaces/<slug:slug>/pools/", pool_views.workspace_pools, name="workspace-pools"),
    path("workspaces/<slug:slug>/labelers/add/", pool_views.invite, name="invite"),
]
