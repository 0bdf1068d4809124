"""Writes and workflows of the labeling app, one module per workflow.

- `datasets`: creating a dataset, changing its settings;
- `imports`: importing a file, at once or queued for a worker;
- `leasing`: the next task, skipping it, expiring and releasing leases;
- `rankings`: submitting a ranking with its comparisons, the export cursor;
- `quality_report`: computing, storing and refreshing a dataset's quality report;
- `leaderboard`: counting battles between source models, the stored model leaderboards;
- `exclusion`: excluding and reinstating labelers;
- `gold`: gold prompts;
- `password_reset`: password reset e-mails;
- `jobs`: what every background job shares (claim, progress, failure).

Every door (pages, API, admin, management commands, tasks, tests) goes through these functions,
so each rule lives in one place and each write has one transaction boundary.
"""
