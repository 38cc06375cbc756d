"""wf.runtime: the programming model, replay engine, worker and the World contract."""
