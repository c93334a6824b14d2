"""Datasets: the built-in ones (``datasets``) and a user's own files, image folders and OpenML
(``files``). Above ``bench.core``; below the execution layer."""

# Importing the package registers every built-in source, in this order (``datasets`` first:
# ``files`` builds on it). pandas, PIL and scikit-learn load inside ``load``.
from bench.data import datasets, files  # noqa: F401
