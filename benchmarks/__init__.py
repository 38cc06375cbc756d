"""wf's benchmark harness: `python -m benchmarks [--suite quick|full|vercel|scale|dbos]`.

Scenarios live in small modules (`overhead`, `streams_bench`, `growth`, `dbos_peer`,
`scale`); the workflows they run are in `workloads`, importable under the same module
name by the worker subprocesses.
"""
