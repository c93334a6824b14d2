"""Execution: the config, plug-in loading, the grid of cells, the cell runner, the local and
Dask executors and the orchestration of a run (rounds of seeds driven by the estimates of
:mod:`bench.analysis` when a precision is asked for). It produces records."""
