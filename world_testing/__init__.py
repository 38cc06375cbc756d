"""The World conformance suite and test stores (`wf.world_testing`).

Any World proves itself against the contract in `wf.runtime.world` by running this suite
with its own store. In the World's test folder:

    # conftest.py
    from wf.world_testing.fixtures import make_world, world, world_store, world_url  # noqa: F401

    @pytest.fixture
    def world_store(tmp_path):               # optional: the default follows WF_TEST_WORLD
        return Store("postgresql://localhost/test?schema=t_1")   # any World URL

    # test_conformance.py
    from wf.world_testing.suite import *     # noqa: F403

`world_store` yields a `Store` whose `url` any process opens with
`wf.runtime.config.world_from_url`; `make_world()` opens (and starts) another World on it,
as a restart or a second process would. What a World may lack is declared in
`World.capabilities`; tests of a capability it lacks are skipped with that reason.
"""

from .stores import Store, fresh_store, test_world_base

__all__ = ["Store", "fresh_store", "test_world_base"]
