"""The World conformance suite against the Postgres World (a fresh schema per test)."""

from wf.world_testing.suite import *  # noqa: F403
