"""AI feedback labelers: adding and changing one, and its runs (start, pause, resume, cancel).

A run is a background job (`AIRun`) that a Celery worker works through in batches: the calls to
the endpoint go out on `concurrency` threads, paced to `requests_per_minute` (labeling.ai_judge),
and each batch's judgments are stored by the worker's own thread. Between batches the worker
writes the run's progress and reads its status, so a pause or a cancel stops it after the batch
in flight; a resumed run goes on with the prompts still unjudged. A prompt whose answer does not
parse, or whose calls keep failing, is stored as a failed judgment (never as a ranking); after
`FAILURES_IN_A_ROW` failures in transit in a row the run fails, loudly, with the last error.
"""

from __future__ import annotations

import logging
import os
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from labeling import ai_judge
from labeling.ai_client import Endpoint
from labeling.ai_models import PRINCIPLE_MAX_CHARS, PRINCIPLES_MAX, AIJudgment, AILabeler, AIRun
from labeling.models import Asked, AuditEvent, Completion, Dataset, Prompt, Ranking
from labeling.services import audit
from labeling.services.jobs import claim_job, failing_loudly
from labeling.services.ranking_store import store_comparisons
from labeling.services.rankings import SUBMITTING

logger = logging.getLogger(__name__)

Status = AIRun.Status
LIVE = (Status.QUEUED, Status.RUNNING, Status.PAUSED)
FAILURES_IN_A_ROW = 5
# A running run whose worker wrote nothing for this long is presumed dead and may be resumed.
STALE_AFTER = timedelta(minutes=10)


def add_ai_labeler(
    *, dataset: Dataset, by: Any = None, request: Any = None, **fields: Any
) -> AILabeler:
    """A new AI labeler of the dataset, with the account its rankings go under (no password:
    it cannot log in). Raises ValidationError naming the field."""
    fields["principles"] = checked_principles(fields.get("principles"))
    with transaction.atomic():
        labeler = AILabeler(dataset=dataset, created_by=by if getattr(by, "pk", None) else None)
        labeler.user = User(username=_free_username(dataset, fields.get("name", "")))
        for name, value in fields.items():
            setattr(labeler, name, value)
        labeler.full_clean(exclude=["user"])
        labeler.user.first_name = labeler.name[:150]
        labeler.user.set_unusable_password()
        labeler.user.save()
        labeler.save()
        _audit(labeler, by, request, change="added")
    return labeler


def update_ai_labeler(
    *, ai_labeler: AILabeler, by: Any = None, request: Any = None, **fields: Any
) -> AILabeler:
    """Change an AI labeler's settings; new principles raise its `constitution_version`."""
    if "principles" in fields:
        fields["principles"] = checked_principles(fields["principles"])
    with transaction.atomic():
        old = AILabeler.objects.select_for_update().get(pk=ai_labeler.pk)
        for name, value in fields.items():
            setattr(ai_labeler, name, value)
        constitution_changed = ai_labeler.principles != old.principles
        if constitution_changed:
            ai_labeler.constitution_version = old.constitution_version + 1
        ai_labeler.full_clean(exclude=["user"])
        ai_labeler.save()
        changed = sorted(name for name in fields if getattr(old, name) != fields[name])
        if changed:
            _audit(ai_labeler, by, request, change="changed", fields=changed)
    return ai_labeler


def checked_principles(principles: Any) -> list[str]:
    """The constitution as a list of 1 to PRINCIPLES_MAX non-empty sentences; None gives the
    default one."""
    if principles is None:
        return AILabeler._meta.get_field("principles").get_default()  # type: ignore[no-any-return]
    if not isinstance(principles, list) or not all(isinstance(p, str) for p in principles):
        raise ValidationError({"principles": "Give the principles as a list of sentences."})
    cleaned = [" ".join(p.split()) for p in principles if p.strip()]
    if not 1 <= len(cleaned) <= PRINCIPLES_MAX:
        raise ValidationError({"principles": f"Give 1 to {PRINCIPLES_MAX} principles."})
    for number, text in enumerate(cleaned, 1):
        if len(text) > PRINCIPLE_MAX_CHARS:
            raise ValidationError(
                {"principles": f"Principle {number} is over {PRINCIPLE_MAX_CHARS} characters."}
            )
    return cleaned


def budget_left(ai_labeler: AILabeler) -> int:
    """Prompts it may still judge: its budget less every judgment it made, failures too."""
    return max(0, ai_labeler.budget_prompts - ai_labeler.judgments.count())


def start_run(
    *, ai_labeler: AILabeler, by: Any = None, request: Any = None, limit: int | None = None
) -> AIRun:
    """Queue a run over the prompts it has not ranked yet, at most `limit` (and its budget).
    Refuses a second live run of the same labeler and an exhausted budget."""
    if limit is not None and limit < 1:
        raise ValidationError({"limit": "Give a number of prompts, 1 or more."})
    with transaction.atomic():
        AILabeler.objects.select_for_update().filter(pk=ai_labeler.pk).exists()
        if ai_labeler.runs.filter(status__in=LIVE).exists():
            raise ValidationError("This AI labeler has a run queued, running or paused already.")
        if budget_left(ai_labeler) == 0:
            raise ValidationError(
                f"Its budget of {ai_labeler.budget_prompts} prompts is used up; raise it first."
            )
        run = AIRun.objects.create(
            ai_labeler=ai_labeler, created_by=by if getattr(by, "pk", None) else None, limit=limit
        )
        audit.record(
            action=AuditEvent.Action.AI_RUN_STARTED,
            workspace_id=ai_labeler.dataset.workspace_id,
            dataset=ai_labeler.dataset,
            actor=by,
            request=request,
            ai_labeler=ai_labeler.name,
            run=run.pk,
            limit=limit,
            endpoint=ai_labeler.base_url,
            model=ai_labeler.model,
        )
        transaction.on_commit(lambda: _enqueue(run))
    return run


def pause_run(*, run: AIRun) -> AIRun:
    """Stop a queued or running run after the batch in flight; `resume_run` goes on."""
    if not AIRun.objects.filter(pk=run.pk, status__in=[Status.QUEUED, Status.RUNNING]).update(
        status=Status.PAUSED
    ):
        raise ValidationError("Only a queued or running run can be paused.")
    run.refresh_from_db()
    return run


def resume_run(*, run: AIRun) -> AIRun:
    """Queue again a paused or failed run, or a running one whose worker died (no heartbeat
    for STALE_AFTER): it judges the prompts still unjudged."""
    stale = timezone.now() - STALE_AFTER
    resumable = Q(status__in=[Status.PAUSED, Status.FAILED]) | Q(
        status=Status.RUNNING, heartbeat_at__lt=stale
    )
    with transaction.atomic():
        if not AIRun.objects.filter(resumable, pk=run.pk).update(
            status=Status.QUEUED, error="", finished_at=None
        ):
            raise ValidationError(
                "Only a paused or failed run, or a running one whose worker stopped answering, "
                "can be resumed."
            )
        transaction.on_commit(lambda: _enqueue(run))
    run.refresh_from_db()
    return run


def cancel_run(*, run: AIRun) -> AIRun:
    """End a run for good; what it stored stays (judgments are whole, one by one)."""
    if not AIRun.objects.filter(pk=run.pk, status__in=LIVE).update(
        status=Status.CANCELLED, finished_at=timezone.now()
    ):
        raise ValidationError("This run has ended already.")
    run.refresh_from_db()
    return run


def _enqueue(run: AIRun) -> None:
    from labeling.tasks import run_ai_labeler  # tasks import this module

    result = run_ai_labeler.delay(run.pk)
    AIRun.objects.filter(pk=run.pk).update(task_id=result.id or "")


def endpoint_of(ai_labeler: AILabeler) -> Endpoint:
    """Its endpoint, with the API key read from the worker's environment (never stored)."""
    key = ""
    if ai_labeler.api_key_env:
        key = os.environ.get(ai_labeler.api_key_env, "")
        if not key:
            raise ValidationError(
                f"The environment variable {ai_labeler.api_key_env} (the API key) is not set "
                "for the worker."
            )
    return Endpoint(
        base_url=ai_labeler.base_url,
        model=ai_labeler.model,
        api=ai_labeler.api,
        api_key=key,
        timeout=ai_labeler.timeout_seconds,
        max_tokens=ai_labeler.max_tokens,
        temperature=ai_labeler.temperature,
        logprobs=ai_labeler.use_logprobs,
    )


def run_ai_labeler(*, run_id: int) -> None:
    """The worker's side of a run: claim it, judge its prompts batch by batch, keep its
    progress, stop when paused or cancelled, fail loudly."""
    if not claim_job(AIRun, run_id, now=timezone.now(), heartbeat_at=timezone.now()):
        return
    run = AIRun.objects.select_related("ai_labeler__dataset").get(pk=run_id)
    with failing_loudly(AIRun, run_id):
        _work_through(run)


def _work_through(run: AIRun) -> None:
    ai_labeler = run.ai_labeler
    endpoint = endpoint_of(ai_labeler)
    wanted = budget_left(ai_labeler)
    if run.limit is not None:
        wanted = min(wanted, run.limit - run.judged - run.failed)
    todo = list(
        Prompt.objects.filter(dataset_id=ai_labeler.dataset_id, is_gold=False)
        .exclude(
            pk__in=AIJudgment.objects.filter(
                ai_labeler=ai_labeler, status=AIJudgment.Status.OK
            ).values("prompt_id")
        )
        .order_by("pk")
        .values_list("pk", flat=True)[: max(0, wanted)]
    )
    AIRun.objects.filter(pk=run.pk).update(planned=run.judged + run.failed + len(todo))
    pace = ai_judge.Pace(ai_labeler.requests_per_minute)
    in_a_row = 0
    batch_size = ai_labeler.concurrency * 2
    with ThreadPoolExecutor(max_workers=ai_labeler.concurrency) as pool:
        for start in range(0, len(todo), batch_size):
            asked = _questions(ai_labeler, todo[start : start + batch_size])
            outcomes = list(
                pool.map(lambda q: ai_judge.judge(endpoint, q, ai_labeler, pace=pace), asked)
            )
            for question, outcome in zip(asked, outcomes, strict=True):
                store_judgment(ai_labeler, run, question, outcome)
                in_a_row = in_a_row + 1 if outcome.in_transit else 0
            if not _note_progress(run, outcomes):
                return
            if in_a_row >= FAILURES_IN_A_ROW:
                raise RuntimeError(
                    f"{in_a_row} prompts in a row failed in transit; the last: "
                    f"{outcomes[-1].error}. Check the endpoint, then resume the run."
                )
    AIRun.objects.filter(pk=run.pk, status=Status.RUNNING).update(
        status=Status.SUCCEEDED, progress=1.0, finished_at=timezone.now()
    )


def _questions(ai_labeler: AILabeler, prompt_ids: list[int]) -> list[ai_judge.Question]:
    """What each call needs of the prompts, in two queries, the completions in a per-call
    shuffled order (seeded by labeler and prompt, so a rerun at temperature 0 repeats)."""
    prompts = Prompt.objects.in_bulk(prompt_ids)
    completions: dict[int, list[tuple[int, str]]] = {pid: [] for pid in prompt_ids}
    rows = Completion.objects.filter(prompt_id__in=prompt_ids).order_by("prompt_id", "position")
    for prompt_id, completion_id, text in rows.values_list("prompt_id", "pk", "text"):
        completions[prompt_id].append((completion_id, text))
    questions = []
    for prompt_id in prompt_ids:
        shown = completions[prompt_id][:]
        random.Random(f"ai:{ai_labeler.pk}:{prompt_id}").shuffle(shown)
        questions.append(
            ai_judge.Question(
                prompt_id=prompt_id, conversation=prompts[prompt_id].messages, shown=shown
            )
        )
    return questions


def _note_progress(run: AIRun, outcomes: list[ai_judge.Outcome]) -> bool:
    """Add a batch to the run's counters; False when the run is no longer running (paused,
    cancelled) and the worker should stop."""
    judged = sum(1 for outcome in outcomes if outcome.order is not None)
    run.judged += judged
    run.failed += len(outcomes) - judged
    run.prompt_tokens += sum(outcome.prompt_tokens for outcome in outcomes)
    run.completion_tokens += sum(outcome.completion_tokens for outcome in outcomes)
    run.call_seconds += sum(outcome.seconds for outcome in outcomes)
    planned = AIRun.objects.values_list("planned", flat=True).get(pk=run.pk)
    done = run.judged + run.failed
    # Written whatever the status: a pause or cancel during the batch keeps its counts true.
    AIRun.objects.filter(pk=run.pk).update(
        judged=run.judged,
        failed=run.failed,
        prompt_tokens=run.prompt_tokens,
        completion_tokens=run.completion_tokens,
        call_seconds=run.call_seconds,
        progress=min(1.0, done / planned) if planned else 1.0,
        heartbeat_at=timezone.now(),
    )
    return AIRun.objects.filter(pk=run.pk, status=Status.RUNNING).exists()


def store_judgment(
    ai_labeler: AILabeler, run: AIRun | None, question: ai_judge.Question, outcome: ai_judge.Outcome
) -> AIJudgment | None:
    """The judgment, and for a parsed answer its ranking and comparisons under the AI
    labeler's account, in one transaction (beside submissions: the export cursor's shared
    lock); None if the prompt was ranked by it meanwhile. A ranked prompt not drawn for the
    human review sample leaves the human queue, unless a human took it already."""
    dataset = ai_labeler.dataset
    now = timezone.now()
    judgment = AIJudgment(
        ai_labeler=ai_labeler,
        run=run,
        prompt_id=question.prompt_id,
        status=AIJudgment.Status.FAILED if outcome.order is None else AIJudgment.Status.OK,
        error=outcome.error,
        model=ai_labeler.model,
        constitution_version=ai_labeler.constitution_version,
        calls=outcome.calls,
        first_slot_picks=outcome.first_slot_picks,
        preference=outcome.preference,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        seconds=outcome.seconds,
        created_at=now,
    )
    try:
        with transaction.atomic():
            if outcome.order is not None:
                judgment.ranking = _store_ranking(ai_labeler, question, outcome, dataset, now)
                judgment.review_sampled = (
                    random.Random(f"review:{ai_labeler.pk}:{question.prompt_id}").random()
                    < ai_labeler.review_rate
                )
                if not judgment.review_sampled:
                    Prompt.objects.filter(pk=question.prompt_id, slots_taken=0).update(
                        left_to_ai=True
                    )
            judgment.save()
    except IntegrityError:
        logger.info("prompt %s was ranked by %s already", question.prompt_id, ai_labeler)
        return None
    return judgment


def _store_ranking(
    ai_labeler: AILabeler,
    question: ai_judge.Question,
    outcome: ai_judge.Outcome,
    dataset: Dataset,
    now: Any,
) -> Ranking:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", [SUBMITTING, dataset.pk])
    assert outcome.order is not None
    ranking = Ranking.objects.create(
        dataset=dataset,
        prompt_id=question.prompt_id,
        labeler_id=ai_labeler.user_id,
        order=outcome.order,
        rationale=outcome.rationale,
        seconds_spent=outcome.seconds,
        guidelines_version=dataset.guidelines_version,
        request_id=uuid.uuid4(),
        created_at=now,
    )
    untied_pair = len(outcome.order) == 2 == len(question.shown)
    strength = ""
    if untied_pair and outcome.preference is not None and dataset.strength != Asked.OFF:
        strength = ai_judge.strength_of(outcome.preference)
    store_comparisons(ranking, outcome.order, strength)
    return ranking


def _free_username(dataset: Dataset, name: str) -> str:
    base = f"ai-{slugify(name)[:40] or 'labeler'}-{dataset.slug}"[:140]
    username, number = base, 1
    while User.objects.filter(username=username).exists():
        number += 1
        username = f"{base}-{number}"
    return username


def _audit(ai_labeler: AILabeler, by: Any, request: Any, **details: Any) -> None:
    audit.record(
        action=AuditEvent.Action.AI_LABELER_CHANGED,
        workspace_id=ai_labeler.dataset.workspace_id,
        dataset=ai_labeler.dataset,
        actor=by,
        request=request,
        ai_labeler=ai_labeler.name,
        endpoint=ai_labeler.base_url,
        model=ai_labeler.model,
        constitution_version=ai_labeler.constitution_version,
        **details,
    )
