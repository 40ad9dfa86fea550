"""PostgresStore's SQL side: the names of its objects, its statements, its schema's life.

The SQL itself lives in two package files: ``postgres_schema.sql`` (tables and functions,
run once on first use) and ``postgres_queries.sql`` (the statements, one per
``-- name:`` section). Both name the store's objects in braces (``{sessions}``); only
those are substituted, with quoted identifiers built from validated names.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from typing import TYPE_CHECKING

from ..errors import DISTRIBUTION, ImproperlyConfigured, SessionStoreError

if TYPE_CHECKING:
    from asyncpg import Connection, Record
    from asyncpg.pool import PoolConnectionProxy

__all__ = ["SCHEMA_VERSION", "SqlNames", "set_up"]

SCHEMA_VERSION = 3

# Each derived name (e.g. "<table>_purge_after") must fit PostgreSQL's 63-byte identifiers.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")
_TOKEN = re.compile(r"\{(\w+)\}")
_SUFFIXES = {
    "sessions": "",
    "data": "_data",
    "meta": "_meta",
    "purge_index": "_purge_after",
    "owner_index": "_owner",
    "write": "_write",
    "expires_at": "_expires_at",
    "public_id": "_public_id",
}


def quote(name: str) -> str:
    """A validated identifier, double-quoted."""
    return f'"{name}"'


def _package_file(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text("utf-8")


def _named_statements(text: str) -> dict[str, str]:
    """The ``-- name: x`` sections of an SQL file, by name."""
    sections = re.split(r"^-- name: (\w+)\n", text, flags=re.MULTILINE)
    return {name: body.strip() for name, body in zip(sections[1::2], sections[2::2], strict=True)}


_STATEMENTS = _named_statements(_package_file("postgres_queries.sql"))

# Migrations (our own SQL, names substituted by render()). Each version changed the write
# function's parameters, so a migration drops the one the found version has, by its
# signature, makes each table change from there on, and installs the current function.
_DROP_WRITE = {
    1: "DROP FUNCTION {write}(bytea, bytea, bool, bool, text[], text[], text[], "
    "float8, float8, float8, float8, float8, text, bool, text, bool);\n",
    # 2: lists and counters merge (p_merge_keys, p_merge_ops).
    2: "DROP FUNCTION {write}(bytea, bytea, bool, bool, text[], text[], text[], "
    "float8, float8, float8, float8, float8, text, bool, text, bool, text[], text[]);\n",
}
# Version n -> n + 1, besides the write function.
_TABLE_CHANGES = {
    1: "",
    # 3: the owner's device (p_device). A nullable column without a default is added
    # without rewriting the table, at once whatever its size; old rows read NULL
    # ("unknown device"). IF NOT EXISTS: a column added ahead (by hand, or by a test that
    # fakes an older version from a newer schema) is no reason to refuse the rest.
    2: "ALTER TABLE {sessions} ADD COLUMN IF NOT EXISTS device text;\n",
}


def _migration(version: int) -> str:
    """The SQL that takes a schema at ``version`` to :data:`SCHEMA_VERSION` (but for the
    version number it records)."""
    schema = _package_file("postgres_schema.sql")
    write = schema[schema.index("-- begin write") : schema.index("-- end write")]
    steps = "".join(_TABLE_CHANGES[step] for step in range(version, SCHEMA_VERSION))
    return _DROP_WRITE[version] + steps + write


class SqlNames:
    """The store's objects for one ``table`` prefix in one ``schema``, and its statements."""

    def __init__(self, table: str, schema: str | None) -> None:
        for option, name in (("table", table), ("schema", schema)):
            if name is not None and not _NAME.fullmatch(name):
                raise ImproperlyConfigured(
                    f"PostgresStore {option}={name!r} is not a plain identifier: use letters, "
                    "digits and underscores, starting with a letter, at most 41 characters."
                )
        self.schema = schema
        prefix = f"{quote(schema)}." if schema else ""
        self.names = {key: prefix + quote(table + suffix) for key, suffix in _SUFFIXES.items()}
        # CREATE INDEX takes an unqualified name: the index lives in its table's schema.
        self.names["purge_index"] = quote(table + _SUFFIXES["purge_index"])
        self.names["owner_index"] = quote(table + _SUFFIXES["owner_index"])
        self.statements = {name: self.render(sql) for name, sql in _STATEMENTS.items()}

    def render(self, sql: str) -> str:
        """``sql`` with each ``{name}`` replaced by the object's quoted name."""
        return _TOKEN.sub(lambda match: self.names[match.group(1)], sql)


async def set_up(
    conn: Connection[Record] | PoolConnectionProxy[Record],
    sql: SqlNames,
    *,
    create: bool,
    where: str,
) -> None:
    """Create the schema if it is missing, or migrate an older one (both only with
    ``create``); else check its version.

    Runs in one transaction under an advisory lock keyed by the table's name, so several
    processes starting at once do not collide: one creates, the others wait and see it.
    """
    digest = hashlib.sha256(f"asgi_sessions:{sql.names['sessions']}".encode()).digest()
    lock = int.from_bytes(digest[:8], "big", signed=True)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock)
        if await conn.fetchval("SELECT to_regclass($1)", sql.names["meta"]) is None:
            if not create:
                raise SessionStoreError(
                    f"PostgreSQL session store {where} has no table {sql.names['sessions']}, "
                    "and create_schema=False. Create it with PostgresStore(..., "
                    "create_schema=True) once, as a user that may create tables."
                )
            if sql.schema:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(sql.schema)}")
            await conn.execute(sql.render(_package_file("postgres_schema.sql")))
            return
        version = await conn.fetchval(sql.render("SELECT max(version) FROM {meta}"))
        # The steps from the version found to SCHEMA_VERSION, in this transaction: a
        # process that waited on the lock finds the new version and migrates nothing.
        if version in _DROP_WRITE:
            if not create:
                raise SessionStoreError(
                    f"PostgreSQL session store {where} has schema version {version}, which "
                    f"this version of {DISTRIBUTION} migrates to {SCHEMA_VERSION}, but "
                    "create_schema=False. Migrate it with PostgresStore(..., "
                    "create_schema=True) once, as a user that may alter the tables."
                )
            await conn.execute(sql.render(_migration(version)))
            await conn.execute(sql.render("UPDATE {meta} SET version = $1"), SCHEMA_VERSION)
            version = SCHEMA_VERSION
        if version != SCHEMA_VERSION:
            raise SessionStoreError(
                f"PostgreSQL session store {where} has schema version {version}, but this "
                f"version of {DISTRIBUTION} uses {SCHEMA_VERSION}. Upgrade {DISTRIBUTION} "
                "(a newer one migrates older schemas on first use)."
            )
