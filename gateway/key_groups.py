"""Named key groups ("X" groups): reusable `MemberGroup` definitions registered in the gateway.

A key group is a public definition of a set of persons (a person-level dimension taking public codes, or
a measure reaching a public threshold, optionally negated) under a name, with English and Chinese titles.
Household queries use it as `household.has_<name>`. A query is immutable and identified by its digest, so
a group is *inlined* into a query's `member_groups` when the query is written (`resolve`), never looked
up while it runs: changing a group later cannot change what a submitted query meant.

    register(engine, definition, ...)  validate against the catalog, then version 1, a new version (the
                                       definition or a title changed) or nothing (identical)
    get / list_groups                  the latest version (or any older one: versions stay readable)
    retire(engine, name, by)           stamp every version; a retired name resolves no more and is not
                                       registered again (its meaning in past reports stays unambiguous)
    resolve(engine, names)             the current definitions, for inlining into a query spec

Errors are domain errors (`gateway.errors`): `KeyGroupNotFound` (not found) and `KeyGroupRetired`
(invalid) for names that cannot be resolved, `Invalid` naming the field for a definition the catalog
does not support, `Forbidden` for a department admin touching another department's group, `Conflict`
for re-registering a retired name. A registration or retirement commits with its audit entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from aggregation.planner import PlanError, plan_query
from aggregation.query import MIN_EPSILON_PER_QUERY, MemberGroup, QuerySpec, Statistic, StatisticKind
from connectors.config import Unit
from connectors.protocol import ConnectorSchema, canonical_json, sha256_hex
from gateway import db, registry
from gateway.audit_trail import AuditTrail, check_free_text
from gateway.auth import Principal, Role
from gateway.errors import Conflict, Forbidden, Invalid, NotFound
from gateway.events import KeyGroupRegistered
from gateway.events import KeyGroupRetired as KeyGroupRetiredEvent

__all__ = [
    "MAX_TITLE",
    "KeyGroupError",
    "KeyGroupNotFound",
    "KeyGroupRecord",
    "KeyGroupRetired",
    "definition_digest",
    "get",
    "list_groups",
    "register",
    "resolve",
    "retire",
    "validate_definition",
]

MAX_TITLE = 200
MAX_DESCRIPTION = 2_000
# The probe query below is planned, never run; its epsilon only has to be a valid query's (the public
# floor) and sit under every department's cap.
_PROBE_EPSILON = MIN_EPSILON_PER_QUERY
# Writers retry this often when a concurrent writer took the same version number first.
_WRITE_ATTEMPTS = 3


class KeyGroupError(Exception):
    """A key group name that cannot be used (mixed into the domain error it is)."""

    name: str


class KeyGroupNotFound(KeyGroupError, NotFound):
    def __init__(self, name: str, field: str = "name") -> None:
        NotFound.__init__(
            self, f"no key group named {name!r}; `fedgate groups list` shows the registered ones", field
        )
        self.name = name


class KeyGroupRetired(KeyGroupError, Invalid):
    def __init__(self, name: str, field: str = "name") -> None:
        Invalid.__init__(self, f"the key group {name!r} is retired and cannot be used in new queries", field)
        self.name = name


@dataclass(frozen=True)
class KeyGroupRecord:
    name: str
    version: int
    definition: MemberGroup
    definition_digest: str
    title: str
    title_zh: str
    description: str
    created_by: str
    created_at: datetime
    retired_at: datetime | None
    retired_by: str | None

    @property
    def retired(self) -> bool:
        return self.retired_at is not None

    def texts(self) -> tuple[str, str, str]:
        return self.title, self.title_zh, self.description

    def public_view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "definition": self.definition,
            "definition_digest": self.definition_digest,
            "title": self.title,
            "title_zh": self.title_zh,
            "description": self.description,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "retired": self.retired,
            "retired_at": self.retired_at,
            "retired_by": self.retired_by,
        }


def definition_digest(definition: MemberGroup) -> str:
    """SHA-256 of the definition's canonical JSON (RFC 8785), as it is inlined into queries."""
    return sha256_hex(canonical_json(definition.model_dump(mode="json")))


def _record(row: sa.Row[Any]) -> KeyGroupRecord:
    return KeyGroupRecord(
        name=row.name,
        version=row.version,
        definition=MemberGroup.model_validate_json(row.definition_json),
        definition_digest=row.definition_digest,
        title=row.title,
        title_zh=row.title_zh,
        description=row.description,
        created_by=row.created_by,
        created_at=row.created_at,
        retired_at=row.retired_at,
        retired_by=row.retired_by,
    )


# --- validation


def _probe(definition: MemberGroup) -> QuerySpec:
    """The smallest household query using the group: a count by `household.has_<name>`."""
    return QuerySpec(
        purpose=f"validate the key group {definition.name} against the catalog",
        unit=Unit.HOUSEHOLD,
        # The planner checks names and domains, not periods; any month will do.
        period_start="2000-01",
        period_end="2000-01",
        group_by=(definition.ref,),
        statistics=(Statistic(kind=StatisticKind.COUNT),),
        epsilon=_PROBE_EPSILON,
        member_groups=(definition,),
    )


def _definition_field(definition: MemberGroup, planner_field: str) -> str:
    """The planner's field in the probe query -> the field of the registration body."""
    prefix = "member_groups.0"
    if planner_field == prefix:
        return "definition.dimension" if definition.dimension is not None else "definition.measure"
    if planner_field.startswith(prefix + "."):
        return "definition" + planner_field[len(prefix) :]
    return "definition"


def validate_definition(definition: MemberGroup, catalog: Mapping[str, ConnectorSchema]) -> None:
    """Return None if a household query can use `definition` with this catalog; else 422 naming the field.

    The planner does the checking (the dataset exists and is keyed by person, the dimension or measure
    exists, every code is in the dimension's public domain, a household register is registered), so a
    group accepted here is accepted again when a query inlines it, as long as the catalog stays the same.
    """
    try:
        plan_query(_probe(definition), catalog)
    except PlanError as exc:
        field = _definition_field(definition, exc.field)
        message = exc.message
        if field == "definition":
            message = f"no household query can use this group: {message}"
        raise Invalid(message, field) from None


def _owner(engine: sa.Engine, definition: MemberGroup) -> str | None:
    """The department whose connector holds the group's dataset (disabled connectors included)."""
    ref = definition.dimension or definition.measure or ""
    record = registry.get_connector(engine, ref.partition(".")[0])
    return record.department if record is not None else None


def _check_department(engine: sa.Engine, by: Principal, definitions: Sequence[MemberGroup]) -> None:
    """A department admin defines groups over its own department's data only; the operator over any."""
    if by.role is Role.OPERATOR:
        return
    if by.role is not Role.DEPARTMENT_ADMIN:
        raise Forbidden("this action needs the role department_admin or operator")
    for definition in definitions:
        if _owner(engine, definition) != by.department:
            raise Forbidden(
                "a department admin registers key groups over its own department's datasets only; ask "
                "the operator or the owning department",
                "definition",
            )


def _check_text(title: str, title_zh: str, description: str) -> None:
    for field, value, limit in (
        ("title", title, MAX_TITLE),
        ("title_zh", title_zh, MAX_TITLE),
        ("description", description, MAX_DESCRIPTION),
    ):
        if len(value) > limit or (field != "description" and not value.strip()):
            raise Invalid(f"{field} must be 1 to {limit} characters", field)
        check_free_text(**{field: value})


# --- storage


def _latest(conn: sa.Connection, name: str) -> KeyGroupRecord | None:
    t = db.key_groups
    row = conn.execute(sa.select(t).where(t.c.name == name).order_by(t.c.version.desc()).limit(1)).first()
    return _record(row) if row is not None else None


def get(engine: sa.Engine, name: str, version: int | None = None) -> KeyGroupRecord:
    """The latest version of `name` (retired or not), or the given version; `KeyGroupNotFound` otherwise."""
    t = db.key_groups
    with engine.connect() as conn:
        if version is None:
            record = _latest(conn, name)
        else:
            row = conn.execute(sa.select(t).where(t.c.name == name, t.c.version == version)).first()
            record = _record(row) if row is not None else None
    if record is None:
        if version is not None:
            raise NotFound(f"the key group {name!r} has no version {version}", "version")
        raise KeyGroupNotFound(name)
    return record


def list_groups(engine: sa.Engine, *, include_retired: bool = False) -> list[KeyGroupRecord]:
    """The latest version of every group, by name; retired ones only if asked for."""
    t = db.key_groups
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t).order_by(t.c.name, t.c.version)).all()
    latest: dict[str, KeyGroupRecord] = {}
    for row in rows:
        latest[row.name] = _record(row)
    return [r for r in latest.values() if include_retired or not r.retired]


def register(
    trail: AuditTrail,
    definition: MemberGroup,
    *,
    title: str,
    title_zh: str,
    description: str = "",
    by: Principal,
) -> tuple[KeyGroupRecord, bool]:
    """Register `definition` under its name; returns the current record and whether a version was written.

    Version 1 for a new name; a new version when the definition or a text differs from the latest one
    (older versions stay readable); nothing when everything is identical. The definition is checked
    against the current catalog first (`Invalid` naming the field). A new version commits with its
    `key_group.registered` entry.
    """
    engine = trail.log.engine
    _check_text(title, title_zh, description)
    validate_definition(definition, registry.catalog(engine))
    name = definition.name
    for _ in range(_WRITE_ATTEMPTS):
        with engine.connect() as conn:
            current = _latest(conn, name)
        if current is not None and current.retired:
            raise Conflict(
                f"the key group {name!r} is retired; register the definition under a new name",
                "definition.name",
                reason="retired",
            )
        texts = (title, title_zh, description)
        if current is not None and current.definition == definition and current.texts() == texts:
            return current, False
        owners = [definition] if current is None else [definition, current.definition]
        _check_department(engine, by, owners)
        version = 1 if current is None else current.version + 1
        values = {
            "name": name,
            "version": version,
            "definition_json": canonical_json(definition.model_dump(mode="json")).decode(),
            "definition_digest": definition_digest(definition),
            "title": title,
            "title_zh": title_zh,
            "description": description,
            "created_by": by.name,
            "created_at": db.utcnow(),
            "retired_at": None,
            "retired_by": None,
        }
        if _insert_next(trail, values, definition, by):
            return get(engine, name), True
    raise Conflict(
        f"the key group {name!r} is being changed concurrently; try again",
        "definition.name",
        reason="concurrent",
    )


def _insert_next(trail: AuditTrail, values: dict[str, Any], definition: MemberGroup, by: Principal) -> bool:
    """Insert `values` with its entry if its version is still the next one; False if another writer came
    first.

    The checks above ran outside this transaction (they read other tables, which an in-memory SQLite
    engine's single shared connection could not do inside it), so the latest version is compared again.
    """
    try:
        with trail.change() as change:
            current = _latest(change.conn, values["name"])
            if (0 if current is None else current.version) + 1 != values["version"] or (
                current is not None and current.retired
            ):
                return False
            change.conn.execute(db.key_groups.insert().values(**values))
            change.record(
                KeyGroupRegistered(
                    actor=by.name,
                    key_group=values["name"],
                    version=values["version"],
                    definition=definition.model_dump(mode="json"),
                    definition_digest=values["definition_digest"],
                    title=values["title"],
                    title_zh=values["title_zh"],
                    description=values["description"],
                )
            )
    except sa.exc.IntegrityError:
        # PostgreSQL: a concurrent transaction committed this version number first.
        return False
    return True


def retire(trail: AuditTrail, name: str, by: Principal) -> tuple[KeyGroupRecord, bool]:
    """Retire every version of `name` with its entry; returns the latest record and whether this call
    retired it."""
    t = db.key_groups
    with trail.change() as change:
        current = _latest(change.conn, name)
        if current is None:
            raise KeyGroupNotFound(name)
        if current.retired:
            return current, False
        change.conn.execute(
            t.update().where(t.c.name == name).values(retired_at=db.utcnow(), retired_by=by.name)
        )
        change.record(KeyGroupRetiredEvent(actor=by.name, key_group=name, version=current.version))
    return get(trail.log.engine, name), True


def resolve(engine: sa.Engine, names: Sequence[str], *, field: str = "groups") -> tuple[MemberGroup, ...]:
    """The current definitions of `names`, in order, to inline into a query's `member_groups`.

    Raises `KeyGroupNotFound` or `KeyGroupRetired` naming `field.<i>`, and `Invalid` for a name given
    twice. Never look a group up while a query runs: the inlined definition is the query's.
    """
    seen: set[str] = set()
    found: list[MemberGroup] = []
    with engine.connect() as conn:
        for i, name in enumerate(names):
            where = f"{field}.{i}"
            if name in seen:
                raise Invalid(f"the key group {name!r} is named twice", where)
            seen.add(name)
            record = _latest(conn, name)
            if record is None:
                raise KeyGroupNotFound(name, where)
            if record.retired:
                raise KeyGroupRetired(name, where)
            found.append(record.definition)
    return tuple(found)
