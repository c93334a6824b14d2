"""Datasets: the built-in ones (``datasets``) and a user's own files, image folders and OpenML
(``files``). Above ``bench.core``; below the execution layer."""
