"""The bottom layer: errors, parameters and the registry, value types (``types``), the results
schema, atomic writes and metrics. It imports nothing else from the project; plug-ins import
only ``bench.core.types`` from the harness."""
