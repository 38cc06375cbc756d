"""`python -m wf.cli` runs the `wf` command."""

from .app import main

main()
