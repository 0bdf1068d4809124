from __future__ import annotations

from celery import shared_task

from labeling.services import imports, quality_report


@shared_task(name="labeling.import_file", acks_late=True, reject_on_worker_lost=True)
def import_file(job_id: int) -> None:
    """Idempotent: the job is claimed by a conditional update, and the import is all or nothing."""
    imports.run_import_job(job_id=job_id)


@shared_task(name="labeling.refresh_quality_report")
def refresh_quality_report(dataset_id: int) -> None:
    """Idempotent: recomputing a report from the same rankings gives the same report."""
    quality_report.refresh_report(dataset_id=dataset_id)
