"""The conformance suite, collected here (its tests live in `wf.world_testing`)."""

from wf.world_testing.suite import *  # noqa: F403
