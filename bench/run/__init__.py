"""Execution: the config, plug-in loading, the grid of cells, the cell runner, the local and
Dask executors, the orchestration of a run and the store of records. It produces records; it
never reads a report."""
