"""Compiled queries: the SQL the ORM writes, compiled once, run with new values, rows made
into instances as the ORM makes them; and the labeling path's access checks
(`access.OFFERED`, `leasing.STILL_OFFERED`) answering as their QuerySets do in every case of
pools, groups, roles, exclusions and account state."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.db import connection
from django.db.models import Exists, F, Q
from django.http import Http404
from rest_framework.authtoken.models import Token

from labeling import access
from labeling.accounts import TOKEN_USER
from labeling.compiled import CompiledQuery, instances
from labeling.models import (
    COMPLETIONS_OF,
    Assignment,
    Dataset,
    LabelerGroup,
    Membership,
    Prompt,
    RatingCriterion,
    Role,
    columns,
)
from labeling.services import leasing
from tests.factories import DatasetFactory, UserFactory, WorkspaceFactory, make_prompt


def orm_offered(slug: str, labeler: int) -> Any:
    datasets = Dataset.objects.with_criteria().with_leases_of(labeler)
    return datasets.filter(slug=slug).active().pooled(labeler)[:1]


def orm_still_offered(dataset: int, labeler: int) -> Any:
    active = User.objects.filter(pk=labeler, is_active=True)
    return Dataset.objects.filter(pk=dataset).pooled(labeler).filter(Exists(active))


def written_out(sql: str, params: list[Any]) -> Any:
    """The statement as PostgreSQL receives it, every parameter in place; elsewhere the pair."""
    if connection.vendor == "postgresql":
        return connection.ops.compose_sql(sql, params)
    return sql, list(params)


def test_the_sql_is_the_orms_with_the_values_in_place(db):
    sql, params = access.OFFERED.sql(slug="some-data", labeler=42)
    orm = orm_offered("some-data", 42).query.get_compiler("default").as_sql()
    assert written_out(sql, params) == written_out(*orm)
    sql, params = leasing.STILL_OFFERED.sql(dataset=7, labeler=42, exists=True)
    orm = orm_still_offered(7, 42).query.exists().get_compiler("default").as_sql()
    assert written_out(sql, params) == written_out(*orm)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL plans prepared SQL")
def test_only_the_callers_values_stay_parameters_on_postgresql(db):
    """The query's constants (the leased status, the roles that may label) are literals, so
    that PostgreSQL can plan the statement once for every call."""
    sql, params = leasing.LIVE_LEASE.sql(labeler=42, dataset=7)
    assert params == [42, 7]
    assert "'leased'" in sql
    sql, params = access.OFFERED.sql(slug="some-data", labeler=42)
    assert params == [42, "some-data", 42, 42, 42, 42]
    assert "'labeler'" in sql and "'active'" in sql
    percent = CompiledQuery(lambda slug: Dataset.objects.filter(slug=slug, name="5%"), slug=str)
    sql, params = percent.sql(slug="x")
    assert params == ["x"] and "'5%%'" in sql
    assert percent.rows(slug="x") == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL plans prepared SQL")
def test_constants_written_in_keep_their_meaning(db):
    """Quotes, backslashes, "%s" and non-ASCII in a str, a negative int, a bool, and SQL that
    already holds "%%" (a LIKE against a column): the written-out query finds what the ORM's
    finds, and only the caller's value is a parameter."""
    dataset = DatasetFactory()
    tricky = "it's \\ %s ü 5%"
    clauses = (
        Q(external_id=tricky)
        | Q(is_gold=True)
        | Q(slots_taken__gt=-1, external_id="only-with-slots")
        | Q(external_id__startswith=F("content_hash"))
    )
    query = CompiledQuery(
        lambda dataset: Prompt.objects.filter(clauses, dataset=dataset).order_by("pk"),
        dataset=int,
    )
    wanted = [
        make_prompt(dataset, external_id=tricky),
        make_prompt(dataset, is_gold=True, gold_order=[["c0"], ["c1"]]),
        make_prompt(dataset, external_id="only-with-slots"),
    ]
    same_start = make_prompt(dataset, external_id="x")
    Prompt.objects.filter(pk=same_start.pk).update(external_id=F("content_hash"))
    make_prompt(dataset, external_id="none of these")
    sql, params = query.sql(dataset=dataset.pk)
    assert params == [dataset.pk]
    assert "%%s" in sql and "ü" in sql
    expected = [p.pk for p in wanted] + [same_start.pk]
    assert sorted(p.pk for p in query.rows(dataset=dataset.pk)) == sorted(expected)
    orm = Prompt.objects.filter(clauses, dataset=dataset.pk)
    assert sorted(orm.values_list("pk", flat=True)) == sorted(expected)


def test_it_compiles_once_per_database_and_form(db, monkeypatch):
    built: list[dict[str, Any]] = []
    compiled = CompiledQuery(
        lambda slug: built.append({"slug": slug}) or Dataset.objects.filter(slug=slug),
        slug=str,
    )
    for slug in ("a", "b", "c"):
        assert compiled.rows(slug=slug) == []
        assert compiled.exists(slug=slug) is False
    assert len(built) == 4  # stand-ins, then ordinary values: for the rows and for exists()


def fields_of(instance: Any) -> dict[str, Any]:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


def test_rows_are_the_instances_the_queryset_gives(db, labeler):
    """Every kind of column the labeling loop reads (times, JSON, text, choices) comes back as
    the ORM gives it, annotations included, on SQLite (which converts times and JSON in
    Python) as on PostgreSQL."""
    dataset = DatasetFactory(slug="rows")
    RatingCriterion.objects.create(dataset=dataset, key="clear", label="Clear", position=9)
    for _ in range(3):
        make_prompt(dataset, completions=2, metadata={"source": "x", "n": [1, 2]})
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    checks = [
        (access.OFFERED, {"slug": "rows", "labeler": labeler.pk}, orm_offered),
        (
            leasing.LIVE_LEASE,
            {"labeler": labeler.pk, "dataset": dataset.pk},
            lambda labeler, dataset: Assignment.objects.filter(
                labeler=labeler, status="leased", prompt__dataset=dataset
            ).order_by("leased_at", "pk")[:1],
        ),
        (COMPLETIONS_OF, {"prompt": assignment.prompt_id}, None),
        (TOKEN_USER, {"key": Token.objects.get_or_create(user=labeler)[0].key}, None),
    ]
    for compiled, values, build in checks:
        expected = list((build or compiled.build)(**values))
        found = compiled.rows(**values)
        assert expected, compiled
        assert [fields_of(i) for i in found] == [fields_of(i) for i in expected]
        assert all(not i._state.adding and i._state.db == "default" for i in found)
    found, expected = (
        access.OFFERED.first(slug="rows", labeler=labeler.pk),
        orm_offered("rows", labeler.pk).get(),
    )
    assert found.criteria_json == expected.criteria_json and isinstance(found.criteria_json, list)
    prompts = list(Prompt.objects.filter(dataset=dataset).order_by("pk"))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns(Prompt)}, 7 FROM labeling_prompt ORDER BY id")
        made = instances(Prompt, cursor.fetchall(), "default")
    assert [fields_of(p) for p in made] == [fields_of(p) for p in prompts]
    assert made[0].metadata == {"source": "x", "n": [1, 2]}


def test_select_related_is_refused(db):
    compiled = CompiledQuery(
        lambda pk: Assignment.objects.select_related("prompt").filter(pk=pk), pk=int
    )
    with pytest.raises(ImproperlyConfigured, match="select_related"):
        compiled.rows(pk=1)


@pytest.mark.parametrize(
    "build, kinds, problem",
    [
        # On PostgreSQL Django folds a lookup out of the column's range into "false" (a
        # SQL that depends on the value); SQLite's integers have no such range.
        pytest.param(
            lambda n: RatingCriterion.objects.filter(scale_min=n),
            {"n": int},
            "depends on",
            marks=pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL"),
        ),
        (
            lambda n: Prompt.objects.filter(pk=n) if n > 1000 else Prompt.objects.none(),
            {"n": int},
            "depends on",
        ),
        (lambda n: Prompt.objects.extra(where=[f"id = {n}"]), {"n": int}, "not one parameter"),
        (lambda n: Prompt.objects.all(), {"n": int}, "not one parameter"),
    ],
)
def test_a_query_whose_sql_depends_on_its_values_is_refused(db, build, kinds, problem):
    with pytest.raises(ImproperlyConfigured, match=problem):
        CompiledQuery(build, **kinds).sql(**{name: 1 for name in kinds})


def test_it_takes_exactly_its_named_values(db):
    with pytest.raises(TypeError, match="takes"):
        access.OFFERED.sql(slug="x")
    with pytest.raises(ImproperlyConfigured):
        CompiledQuery(lambda when: Prompt.objects.filter(created_at=when), when=float)


@pytest.fixture
def cases(db) -> dict[str, Any]:
    """A dataset, its paused sibling, and labelers in every relation to them."""
    workspace = WorkspaceFactory(slug="cases")
    dataset = DatasetFactory(workspace=workspace, slug="open-data")
    RatingCriterion.objects.create(dataset=dataset, key="clear", label="Clear", position=9)
    paused = DatasetFactory(workspace=workspace, slug="paused", status=Dataset.Status.ARCHIVED)
    group = LabelerGroup.objects.create(workspace=workspace, name="vendor")
    dataset.pool_groups.add(group)
    people = {}
    for name, role in (
        ("by_name", Role.LABELER),
        ("by_group", Role.LABELER),
        ("reviewer", Role.REVIEWER),
        ("service", Role.SERVICE),
        ("stranger", None),
        ("excluded_here", Role.LABELER),
        ("excluded_everywhere", Role.LABELER),
        ("inactive", Role.LABELER),
        ("unpooled", Role.LABELER),
    ):
        user = UserFactory(username=name, role=False)
        people[name] = user
        if role is not None:
            Membership.objects.create(workspace=workspace, user=user, role=role)
        if name != "unpooled" and name != "by_group":
            dataset.pool_labelers.add(user)
            paused.pool_labelers.add(user)
    group.members.add(people["by_group"])
    dataset.exclusions.create(workspace=workspace, labeler=people["excluded_here"])
    workspace.exclusions.create(labeler=people["excluded_everywhere"])
    User.objects.filter(pk=people["inactive"].pk).update(is_active=False)
    return {"dataset": dataset, "paused": paused, "people": people}


def test_the_labeling_queries_answer_as_their_querysets_do(cases):
    offered, still_offered = set(), set()
    for name, user in cases["people"].items():
        for dataset in (cases["dataset"], cases["paused"]):
            expected = list(orm_offered(dataset.slug, user.pk))
            found = access.OFFERED.rows(slug=dataset.slug, labeler=user.pk)
            assert [d.pk for d in found] == [d.pk for d in expected], (name, dataset.slug)
            still = orm_still_offered(dataset.pk, user.pk).exists()
            assert leasing.STILL_OFFERED.exists(dataset=dataset.pk, labeler=user.pk) is still
            offered |= {(name, d.slug) for d in found}
            still_offered |= {(name, dataset.slug)} if still else set()
    labelers = {(name, "open-data") for name in ("by_name", "by_group", "reviewer")}
    # `dataset_to_label` refuses an inactive account before it asks (see below), and the check
    # after a lease is made asks about the pool and the account, not the dataset's status.
    assert offered == labelers | {("inactive", "open-data")}
    assert {(name, slug) for name, slug in still_offered if slug == "open-data"} == labelers


# What each person gets asking for work on "open-data": the dataset, or the refusal.
ANSWERS = {
    "by_name": None,
    "by_group": None,
    "reviewer": None,
    "service": PermissionDenied,  # a member whose role may not label
    "stranger": Http404,  # not a member: may not see it at all
    "excluded_here": Http404,  # a labeler sees only what is offered to them
    "excluded_everywhere": Http404,
    "inactive": Http404,
    "unpooled": Http404,
}


def test_dataset_to_label_gives_what_offered_to_gives_and_says_why_not(cases):
    people = {name: User.objects.get(pk=user.pk) for name, user in cases["people"].items()}
    assert ANSWERS.keys() == people.keys()
    for name, refusal in ANSWERS.items():
        offered = Dataset.objects.with_criteria().filter(slug="open-data").offered_to(people[name])
        assert offered.exists() is (refusal is None), name
        if refusal is None:
            dataset = access.dataset_to_label(people[name], "open-data")
            assert fields_of(dataset) == fields_of(offered.get())
            keys = [criterion.key for criterion in dataset.all_criteria]
            assert keys == [c.key for c in RatingCriterion.objects.filter(dataset=dataset)]
            assert keys[-1] == "clear"
        else:
            with pytest.raises(refusal):
                access.dataset_to_label(people[name], "open-data")
    with pytest.raises(Http404):
        access.dataset_to_label(people["by_name"], "no-such-data")


def test_the_access_check_runs_one_query(cases, django_assert_num_queries):
    labeler = User.objects.get(pk=cases["people"]["by_name"].pk)
    access.dataset_to_label(labeler, "open-data")  # compiled here
    with django_assert_num_queries(1):
        access.dataset_to_label(labeler, "open-data")
