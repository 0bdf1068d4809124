from __future__ import annotations

from django.urls import path, re_path

from labeling import ai_api, api, export_api, pool_api, workspace_api

app_name = "labeling-api"
urlpatterns = [
    path("datasets/", api.dataset_list, name="datasets"),
    path("datasets/<slug:slug>/", api.dataset_detail, name="dataset"),
    path("datasets/<slug:slug>/imports/", api.import_create, name="imports"),
    path("imports/<int:import_id>/", api.import_detail, name="import"),
    path("imports/<int:import_id>/cancel/", api.import_cancel, name="import-cancel"),
    path("datasets/<slug:slug>/prompts/", api.PromptList.as_view(), name="prompts"),
    path("datasets/<slug:slug>/next-task/", api.next_task, name="next-task"),
    path("assignments/<int:assignment_id>/ranking/", api.submit_ranking, name="ranking"),
    path("assignments/<int:assignment_id>/skip/", api.skip_task, name="skip"),
    path("datasets/<slug:slug>/comparisons/", export_api.comparison_export, name="comparisons"),
    path("datasets/<slug:slug>/rankings/", export_api.ranking_export, name="rankings"),
    path("datasets/<slug:slug>/quality/", api.quality_report, name="quality"),
    path("datasets/<slug:slug>/prompt-stats/", api.PromptStatsList.as_view(), name="prompt-stats"),
    path("datasets/<slug:slug>/leaderboard/", api.model_leaderboard, name="leaderboard"),
    path("workspaces/", workspace_api.workspace_list, name="workspaces"),
    path("workspaces/<slug:slug>/", workspace_api.workspace_detail, name="workspace"),
    path("workspaces/<slug:slug>/members/", workspace_api.member_list, name="members"),
    path(
        "workspaces/<slug:slug>/members/<str:username>/",
        workspace_api.member_detail,
        name="member",
    ),
    path("workspaces/<slug:slug>/audit/", workspace_api.audit_list, name="audit"),
]

# Labeler pools, exclusions and adding labelers in bulk (labeling.pool_api).
urlpatterns += [
    path("datasets/<slug:slug>/pool/", pool_api.dataset_pool, name="pool"),
    path("datasets/<slug:slug>/pool/remove/", pool_api.dataset_pool_remove, name="pool-remove"),
    path("datasets/<slug:slug>/exclusions/", pool_api.dataset_exclusions, name="exclusions"),
    path(
        "datasets/<slug:slug>/exclusions/<str:username>/",
        pool_api.dataset_exclusion,
        name="exclusion",
    ),
    path(
        "workspaces/<slug:slug>/exclusions/",
        pool_api.workspace_exclusions,
        name="workspace-exclusions",
    ),
    path(
        "workspaces/<slug:slug>/exclusions/<str:username>/",
        pool_api.workspace_exclusion,
        name="workspace-exclusion",
    ),
    path("workspaces/<slug:slug>/labelers/", pool_api.workspace_labelers, name="labelers"),
]

# AI labelers and their runs (labeling.ai_api).
urlpatterns += [
    path("datasets/<slug:slug>/ai-labelers/", ai_api.dataset_ai_labelers, name="ai-labelers"),
    path("ai-labelers/<int:labeler_id>/", ai_api.ai_labeler_detail, name="ai-labeler"),
    path("ai-labelers/<int:labeler_id>/runs/", ai_api.ai_labeler_runs, name="ai-runs"),
    path("ai-runs/<int:run_id>/", ai_api.ai_run_detail, name="ai-run"),
    re_path(
        r"^ai-runs/(?P<run_id>[0-9]+)/(?P<action>pause|resume|cancel)/$",
        ai_api.ai_run_action,
        name="ai-run-action",
    ),
]
