"""The bottom layer: errors, parameters and the registry, value types (``types``), the results
schema, atomic writes, metrics and the store of record files and tables (which execution writes
and analysis reads). It imports nothing else from the project; plug-ins import only
``bench.core.types`` from the harness."""
