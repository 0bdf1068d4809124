"""The labeling loop's queries: written with the ORM, compiled once per process and database,
then run as SQL with new values; and model instances made from rows, as the ORM makes them.

Building and compiling a QuerySet costs more CPU than PostgreSQL spends running it: the
labeling access check (`DatasetQuerySet.pooled`, three EXISTS) took 2 ms of Python per request to
build and compile and 0.1 ms in the database, and Django's RawQuerySet spends a fifth of a
millisecond per query working out which column is which. A `CompiledQuery` keeps the QuerySet as
the one place the query's meaning is written. On first use in a process it builds the QuerySet
with stand-in values, compiles it for the database at hand, and finds where each stand-in appears
among the compiled parameters; later calls run the same SQL with the caller's values in those
places, and make instances from the rows with what that compile worked out (columns, converters,
annotations). A stand-in that does not come out as exactly one parameter per use (folded into the
SQL text, transformed, or missing), or a second compile with ordinary values that gives another
SQL text, is an error at compile time, not a wrong query.

Use it only for queries whose SQL does not depend on the values (no `__in` lists, no branches on
a value in Python) and that select one model's rows (no `select_related`, no `values()`).

PostgreSQL's own prepared statements (`DATABASE_PREPARED_STATEMENTS`) are another matter: they
save the database from planning a statement again; this saves Django from writing it again. The
two meet in `inline_constants`: on PostgreSQL the query's plain constants are written into its
text, so that the server can keep one plan for it.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from django.core.exceptions import EmptyResultSet, ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model, QuerySet

M = TypeVar("M", bound=Model)

# Stand-in integers: inside a 32-bit column's range (out of range, Django 5 folds a lookup into
# "false"), and unlike any id or constant a query of this app holds.
_FIRST_STAND_IN = 2_146_000_001

# Per column: the converters the ORM applies to it, and the expression they are given.
Converters = dict[int, tuple[list[Callable[..., Any]], Any]]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # Per parameter: the value's name, or None for a constant (`inline_constants` may have
    # written those into the SQL instead).
    places: list[str | None]
    constants: list[Any]
    # How rows become instances (see ModelIterable): the model's columns, their attribute
    # names, the annotations' columns, and the converters of every column.
    fields: slice
    attnames: list[str]
    annotations: dict[str, int]
    converters: Converters


class CompiledQuery(Generic[M]):
    """`build(**values)` (a QuerySet) as one SQL text per database, run with new `values`.

    `kinds` names each value and its type (`int` or `str`); every call passes them all.
    """

    def __init__(self, build: Callable[..., QuerySet[M]], **kinds: type) -> None:
        if not kinds or any(kind not in (int, str) for kind in kinds.values()):
            raise ImproperlyConfigured("CompiledQuery values are named ints or strs")
        self.build = build
        self.kinds = kinds
        self._compiled: dict[tuple[str, bool], _Compiled] = {}
        self._model: type[M] | None = None

    def _compile(self, using: str, exists: bool) -> _Compiled:
        """Compiled with stand-ins that show where the values go, then checked against a
        compile with ordinary values (the same SQL text, each value where the stand-in was)."""
        key = (using, exists)
        if key not in self._compiled:
            token = uuid.uuid4().hex
            numbers = itertools.count(_FIRST_STAND_IN)
            stand_ins = {
                name: next(numbers) if kind is int else f"\x1fcompiled:{name}:{token}"
                for name, kind in self.kinds.items()
            }
            compiler, sql, params = self._as_sql(using, exists, stand_ins)
            places = self._places(stand_ins, sql, params)
            ordinary = {
                name: index if kind is int else f"v{index}"
                for index, (name, kind) in enumerate(self.kinds.items(), start=1)
            }
            expected = [
                constant if name is None else ordinary[name]
                for name, constant in zip(places, params, strict=True)
            ]
            if self._as_sql(using, exists, ordinary)[1:] != (sql, expected):
                raise ImproperlyConfigured(
                    "CompiledQuery: its SQL depends on the values, not only its parameters"
                )
            sql, places, params = inline_constants(connections[using], sql, places, params)
            self._compiled[key] = self._with_rows(compiler, sql, places, params)
        return self._compiled[key]

    def _as_sql(
        self, using: str, exists: bool, values: dict[str, Any]
    ) -> tuple[Any, str, list[Any]]:
        query = self.build(**values).query
        self._model = cast("type[M]", query.model)
        if exists:
            query = query.exists()
        compiler = query.get_compiler(using=using)
        try:
            sql, params = compiler.as_sql()
        except EmptyResultSet:  # a value the ORM knows matches nothing: no SQL to share
            raise ImproperlyConfigured(
                "CompiledQuery: its SQL depends on the values, not only its parameters"
            ) from None
        return compiler, sql, list(params)

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
                    f"CompiledQuery: the value {name!r} is not one parameter of the SQL"
                )
        return places

    @staticmethod
    def _with_rows(
        compiler: Any, sql: str, places: list[str | None], constants: list[Any]
    ) -> _Compiled:
        select, klass_info = compiler.select, compiler.klass_info
        if klass_info is None:  # exists(): no instances
            return _Compiled(sql, places, constants, slice(0), [], {}, {})
        if klass_info.get("related_klass_infos"):
            raise ImproperlyConfigured("CompiledQuery: select_related is not supported")
        fields = klass_info["select_fields"]
        start, end = fields[0], fields[-1] + 1
        return _Compiled(
            sql,
            places,
            constants,
            fields=slice(start, end),
            attnames=[column[0].target.attname for column in select[start:end]],
            annotations=dict(compiler.annotation_col_map or {}),
            converters=compiler.get_converters([column[0] for column in select]),
        )

    def sql(
        self, using: str = DEFAULT_DB_ALIAS, *, exists: bool = False, **values: Any
    ) -> tuple[str, list[Any]]:
        """(SQL, parameters) of the query with `values`; `exists`: of its `.exists()`."""
        compiled = self._compile_for(using, exists, values)
        return compiled.sql, self._params(compiled, values)

    def _compile_for(self, using: str, exists: bool, values: dict[str, Any]) -> _Compiled:
        if values.keys() != self.kinds.keys():
            raise TypeError(f"CompiledQuery takes {sorted(self.kinds)}, got {sorted(values)}")
        return self._compile(using, exists)

    def _params(self, compiled: _Compiled, values: dict[str, Any]) -> list[Any]:
        return [
            constant if name is None else self.kinds[name](values[name])
            for name, constant in zip(compiled.places, compiled.constants, strict=True)
        ]

    def rows(self, using: str = DEFAULT_DB_ALIAS, **values: Any) -> list[M]:
        """The model instances, with their annotations, as the QuerySet would give them."""
        compiled = self._compile_for(using, False, values)
        connection = connections[using]
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, self._params(compiled, values))
            rows = cursor.fetchall()
        assert self._model is not None  # set by the compile
        found = []
        for row in convert(rows, compiled.converters, connection):
            instance = self._model.from_db(using, compiled.attnames, row[compiled.fields])
            for name, position in compiled.annotations.items():
                setattr(instance, name, row[position])
            found.append(instance)
        return found

    def first(self, using: str = DEFAULT_DB_ALIAS, **values: Any) -> M | None:
        found = self.rows(using, **values)
        return found[0] if found else None

    def exists(self, using: str = DEFAULT_DB_ALIAS, **values: Any) -> bool:
        sql, params = self.sql(using, exists=True, **values)
        with connections[using].cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone() is not None


def inline_constants(
    connection: Any, sql: str, places: list[str | None], constants: list[Any]
) -> tuple[str, list[str | None], list[Any]]:
    """On PostgreSQL, the query's plain constants (bool, int, str: a status, the roles that may
    label) written into its text as literals; the caller's values and any other constant (a
    time, a list) remain parameters.

    With prepared statements, PostgreSQL plans a statement once for any parameters (a generic
    plan) only when that plan looks no worse than the ones it makes for the parameters at hand.
    Given `status = $3`, it cannot tell that the status is the rare "leased" and expects
    hundreds of rows, so it planned the live lease query anew on every call: 0.2 ms, twenty
    times what running it took. Elsewhere the text is left as compiled."""
    if connection.vendor != "postgresql":
        return sql, places, constants
    from psycopg import sql as psycopg_sql

    with connection.cursor() as cursor:  # a literal is quoted for its connection's encoding
        raw = cursor.connection
    pieces = iter(zip(places, constants, strict=True))
    kept: list[tuple[str | None, Any]] = []

    def place(match: re.Match[str]) -> str:
        if match.group() == "%%":
            return "%%"
        piece = next(pieces, None)
        if piece is None:
            raise ImproperlyConfigured("CompiledQuery: more places in the SQL than parameters")
        name, constant = piece
        if name is None and isinstance(constant, bool | int | str):
            # A choice (`Role.LABELER`) as the plain str it stands for.
            plain = str.__str__(constant) if isinstance(constant, str) else constant
            return psycopg_sql.Literal(plain).as_string(raw).replace("%", "%%")
        kept.append((name, constant))
        return "%s"

    sql = re.sub(r"%%|%s", place, sql)
    if next(pieces, None) is not None:
        raise ImproperlyConfigured("CompiledQuery: more parameters than places in the SQL")
    return sql, [name for name, _ in kept], [constant for _, constant in kept]


def convert(rows: Sequence[Sequence[Any]], converters: Converters, connection: Any) -> list[Any]:
    """The rows with each column's converters applied (`SQLCompiler.apply_converters`)."""
    if not converters:
        return list(rows)
    converted = []
    for row in rows:
        values = list(row)
        for position, (functions, expression) in converters.items():
            for function in functions:
                values[position] = function(values[position], expression, connection)
        converted.append(values)
    return converted


_MODEL_CONVERTERS: dict[tuple[type[Model], str], Converters] = {}


def instances(model: type[M], rows: Sequence[Sequence[Any]], using: str) -> list[M]:
    """Instances of `model` from rows whose first columns are its concrete fields, in order
    (as `labeling.models.columns` lists them, for the few statements written out as SQL);
    the fields' converters applied as the ORM applies them. Extra columns are left out."""
    connection = connections[using]
    key = (model, connection.vendor)
    converters = _MODEL_CONVERTERS.get(key)
    if converters is None:
        table = model._meta.db_table
        columns = [field.get_col(table) for field in model._meta.concrete_fields]
        converters = model._default_manager.none().query.get_compiler(using).get_converters(columns)
        _MODEL_CONVERTERS[key] = converters
    attnames = [field.attname for field in model._meta.concrete_fields]
    width = len(attnames)
    return [
        model.from_db(using, attnames, row)
        for row in convert([row[:width] for row in rows], converters, connection)
    ]
