"""Analysis reads tables only: recovery, statistics, compare, plots and the report. It never
imports an attack, defense, model, scikit-learn, PyOD or torch, and never loads a dataset."""
