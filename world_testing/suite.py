"""Every test of the World conformance suite: `from wf.world_testing.suite import *` in a test module."""

from .contract_flow_control import *  # noqa: F403
from .contract_operations import *  # noqa: F403
from .contract_queue import *  # noqa: F403
from .contract_runs_and_events import *  # noqa: F403
from .contract_steps_hooks_waits import *  # noqa: F403
from .contract_storage_races import *  # noqa: F403
from .contract_streams import *  # noqa: F403
