"""Hot queries written with the ORM, compiled once per process and database, then run as SQL.

Building and compiling a QuerySet costs more CPU than PostgreSQL spends running it: the
labeling access check (`DatasetQuerySet.pooled`, three EXISTS) took 2 ms of Python per request to
build and compile and 0.1 ms in the database. A `Prepared` query keeps the QuerySet as the one
place the query's meaning is written. On first use in a process it builds the QuerySet with
stand-in values, compiles it for the database at hand, and finds where each stand-in appears
among the compiled parameters; later calls run the same SQL with the caller's values in those
places. A stand-in that does not come out as exactly one parameter per use (folded into the SQL
text, transformed, or missing) is an error at compile time, not a wrong query.

Use it only for queries whose SQL does not depend on the values (no `__in` lists, no branches on
a value in Python): the stand-ins pick the one SQL text every call shares.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from django.core.exceptions import EmptyResultSet, ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model, QuerySet
from django.db.models.query import RawQuerySet

M = TypeVar("M", bound=Model)

# Stand-in integers: inside a 32-bit column's range (out of range, Django 5 folds a lookup into
# "false"), and unlike any id or constant a query of this app holds.
_FIRST_STAND_IN = 2_146_000_001


class Prepared(Generic[M]):
    """`build(**values)` (a QuerySet) as one SQL text per database, run with new `values`.

    `kinds` names each value and its type (`int` or `str`); every call passes them all.
    """

    def __init__(self, build: Callable[..., QuerySet[M]], **kinds: type) -> None:
        if not kinds or any(kind not in (int, str) for kind in kinds.values()):
            raise ImproperlyConfigured("Prepared values are named ints or strs")
        self.build = build
        self.kinds = kinds
        self._compiled: dict[tuple[str, bool], tuple[str, list[str | None], list[Any]]] = {}
        self._model: type[M] | None = None

    def _compile(self, using: str, exists: bool) -> tuple[str, list[str | None], list[Any]]:
        """The SQL, the value each parameter takes, and the constants: compiled with stand-ins
        that show where the values go, then checked against a compile with ordinary values
        (the same SQL text, each value where the stand-in was)."""
        key = (using, exists)
        if key not in self._compiled:
            token = uuid.uuid4().hex
            numbers = itertools.count(_FIRST_STAND_IN)
            stand_ins = {
                name: next(numbers) if kind is int else f"\x1fprepared:{name}:{token}"
                for name, kind in self.kinds.items()
            }
            sql, params = self._as_sql(using, exists, stand_ins)
            places = self._places(stand_ins, sql, params)
            ordinary = {
                name: index if kind is int else f"v{index}"
                for index, (name, kind) in enumerate(self.kinds.items(), start=1)
            }
            expected = [
                constant if name is None else ordinary[name]
                for name, constant in zip(places, params, strict=True)
            ]
            if self._as_sql(using, exists, ordinary) != (sql, expected):
                raise ImproperlyConfigured(
                    "Prepared query: its SQL depends on the values, not only its parameters"
                )
            self._compiled[key] = (sql, places, params)
        return self._compiled[key]

    def _as_sql(self, using: str, exists: bool, values: dict[str, Any]) -> tuple[str, list[Any]]:
        query = self.build(**values).query
        self._model = cast("type[M]", query.model)
        if exists:
            query = query.exists()
        try:
            sql, params = query.get_compiler(using=using).as_sql()
        except EmptyResultSet:  # a value the ORM knows matches nothing: no SQL to share
            raise ImproperlyConfigured(
                "Prepared query: its SQL depends on the values, not only its parameters"
            ) from None
        return sql, list(params)

    @staticmethod
    def _places(stand_ins: dict[str, int | str], sql: str, params: list[Any]) -> list[str | None]:
        """For each compiled parameter, the name of the value it takes (None: a constant of the
        query, kept as compiled)."""
        names = {(type(value), value): name for name, value in stand_ins.items()}
        places = [
            names.get((type(param), param)) if isinstance(param, int | str) else None
            for param in params
        ]
        for name, value in stand_ins.items():
            if name not in places or str(value) in sql:
                raise ImproperlyConfigured(
                    f"Prepared query: the value {name!r} is not one parameter of the SQL"
                )
        return places

    def sql(
        self, using: str = DEFAULT_DB_ALIAS, *, exists: bool = False, **values: Any
    ) -> tuple[str, list[Any]]:
        """(SQL, parameters) of the query with `values`; `exists`: of its `.exists()`."""
        if values.keys() != self.kinds.keys():
            raise TypeError(f"Prepared query takes {sorted(self.kinds)}, got {sorted(values)}")
        sql, places, constants = self._compile(using, exists)
        params = [
            constant if name is None else self.kinds[name](values[name])
            for name, constant in zip(places, constants, strict=True)
        ]
        return sql, params

    def raw(self, using: str = DEFAULT_DB_ALIAS, **values: Any) -> RawQuerySet[M]:
        """The rows as model instances. Model fields are converted as the ORM would; an
        annotation comes as the database driver gives it (JSON may be text)."""
        sql, params = self.sql(using, **values)
        assert self._model is not None  # set by the compile `sql` ran
        return self._model._default_manager.db_manager(using).raw(sql, params)

    def exists(self, using: str = DEFAULT_DB_ALIAS, **values: Any) -> bool:
        sql, params = self.sql(using, exists=True, **values)
        with connections[using].cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone() is not None
