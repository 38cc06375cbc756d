"""Parsing a Postgres World URL: the libpq connection string and the schema name it names."""

from __future__ import annotations

import os
import re
import zlib
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..runtime.errors import WorldConfigError

DEFAULT_SCHEMA = "wf"
#: Query parameters of a World URL that are wf's own, not libpq's (removed from the connection string).
OWN_PARAMETERS = frozenset({"schema", "prepare"})
#: Schema names become SQL identifiers: lower-case letters, digits and `_`, not `pg_…`.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def hide_password(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def check_schema_name(name: object) -> str:
    """`name` if it is a safe schema name, else WorldConfigError saying what is allowed."""
    if not isinstance(name, str) or not _SCHEMA_NAME.fullmatch(name) or name.startswith("pg_"):
        raise WorldConfigError(
            f"invalid Postgres schema name {name!r}: use 1 to 63 lower-case letters, digits or '_' "
            "(not starting with a digit or 'pg_')"
        )
    return name


def parse_world_url(url: str, schema: str | None = None) -> tuple[str, str]:
    """(connection URL without `schema=`, schema name) for a `postgresql://` / `postgres://` URL.

    The schema is `schema` if given, else the URL's `?schema=`, else `WF_PG_SCHEMA`, else `wf`.
    """
    if not isinstance(url, str) or not re.match(r"^postgres(ql)?://", url.strip()):
        raise WorldConfigError(f"not a PostgreSQL URL: {hide_password(str(url))!r} (use postgresql://…)")
    parts = urlsplit(url.strip())
    query = parse_qsl(parts.query, keep_blank_values=True)
    in_url = [value for key, value in query if key == "schema"]
    rest = [(key, value) for key, value in query if key not in OWN_PARAMETERS]
    chosen = schema if schema is not None else (in_url[-1] if in_url else None)
    if chosen is None:
        chosen = os.environ.get("WF_PG_SCHEMA", "").strip() or DEFAULT_SCHEMA
    conninfo = urlunsplit(parts._replace(query=urlencode(rest)))
    return conninfo, check_schema_name(chosen)


def prepared_statements(url: str) -> bool:
    """Whether to use server-side prepared statements: the URL's `?prepare=`, else `WF_PG_PREPARE`, else on.

    They save the server parsing and planning each statement again (about 0.3 ms of a step's
    write here). Turn them off (`prepare=off`) behind a pooler that cannot keep them, such as
    PgBouncer in transaction mode before 1.21 or without `max_prepared_statements`."""
    query = dict(parse_qsl(urlsplit(url.strip()).query, keep_blank_values=True))
    value = query.get("prepare", os.environ.get("WF_PG_PREPARE", "on")).strip().lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise WorldConfigError(f"invalid prepare={value!r} in the Postgres URL or WF_PG_PREPARE: use on or off")


def lock_space(schema: str) -> int:
    """The first key of this schema's advisory locks (a positive int4 derived from its name)."""
    return zlib.crc32(f"wf:{schema}".encode()) & 0x7FFFFFFF
