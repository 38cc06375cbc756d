"""wf's HTTP app: webhooks, a JSON API and the web UI, served by `wf dev` and `wf ui`.

`create_app(world)` builds the Starlette app; `WebServer` runs it with uvicorn inside the
caller's event loop. The app reads and changes runs only through the World contract and
the runtime's operations.
"""

from .app import WebSettings, create_app
from .server import WebServer

__all__ = ["WebServer", "WebSettings", "create_app"]
