"""The CLI's subcommands, one module per set of imports: ``bench.interfaces.cli`` holds the
parser and imports only the module of the command it runs (its ``COMMANDS`` table).

Why not import them all up front: ``--help`` and ``list`` take ~0.1-0.2 s, a run's imports
(pandas, scikit-learn, PyOD, the runner) ~0.6 s and all commands' together ~1 s, and the CI
gate (``compare``) should pay only for the analysis it runs.
"""
