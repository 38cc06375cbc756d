"""The World conformance suite (`wf.world_testing`) on the World `WF_TEST_WORLD` names (default: local dirs)."""

from wf.world_testing.fixtures import make_world, world, world_store, world_url  # noqa: F401
