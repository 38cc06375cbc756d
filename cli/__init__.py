"""wf.cli: the `wf` command line."""
