"""Fresh, isolated stores for tests, on whichever World the test run is pointed at.

`WF_TEST_WORLD` names the base: unset (or a path) means a local data dir under the test's
`tmp_path`; `postgresql://…` means a new schema of that database per store, dropped at the
end; `module:factory` is used as it is (a World of the user's own, which owns its isolation).
CI runs the runtime and e2e suites once more with `WF_TEST_WORLD=postgresql://…`.
"""

from __future__ import annotations

import importlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from wf.runtime.config import local_path

#: Postgres URL schemes and the function of the Postgres World that drops a schema.
_PG_SCHEMES = ("postgresql://", "postgres://")
_PG_DROP = "wf.world_postgres.world:drop_schema"


def test_world_base() -> str | None:
    """The base the tests' stores are made under (`WF_TEST_WORLD`), or None for local dirs."""
    return os.environ.get("WF_TEST_WORLD", "").strip() or None


def is_postgres(url: str) -> bool:
    return url.startswith(_PG_SCHEMES)


def with_query(url: str, **params: str) -> str:
    """`url` with its query parameters set (others kept)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def schema_of(url: str) -> str | None:
    return dict(parse_qsl(urlsplit(url).query)).get("schema")


@dataclass(frozen=True)
class Store:
    """One isolated store: the URL any process opens it with (`wf.runtime.config.world_from_url`)."""

    url: str

    @property
    def kind(self) -> str:
        if is_postgres(self.url):
            return "postgres"
        return "local" if local_path(self.url) is not None else "custom"

    @property
    def data_dir(self) -> Path | None:
        """The local World's directory, or None for other Worlds."""
        return local_path(self.url)

    async def drop(self) -> None:
        """Remove what the store holds where that is cheap to do (a Postgres schema); local dirs go with tmp_path."""
        if self.kind == "postgres":
            schema = schema_of(self.url)
            if schema:
                module, _, attr = _PG_DROP.partition(":")
                await getattr(importlib.import_module(module), attr)(self.url, schema)


def fresh_store(tmp_path: Path, name: str = "data", base: str | None = None) -> Store:
    """A new empty store for one test (see the module docs)."""
    base = base if base is not None else test_world_base()
    if base is None or local_path(base) is not None:
        return Store(f"file:{tmp_path / name}")
    if is_postgres(base):
        return Store(with_query(base, schema=f"t_{secrets.token_hex(6)}"))
    return Store(base)
