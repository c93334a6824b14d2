"""Human names for the results table's columns, for headers, chart titles and help texts.

The app never shows a raw column name (``attack_label``, ``extra_fraction``) as a header or a
title: it shows :func:`title` and keeps the column name in :func:`help_text`, so a user who
reads the CSV or writes pandas code still finds the column.
"""

from __future__ import annotations

#: column → (human name, what it holds). Columns not listed get their name with spaces.
COLUMNS: dict[str, tuple[str, str]] = {
    "cell_id": ("Cell", "stable hash of the cell's canonical form"),
    "dataset": ("Dataset", "registered dataset name"),
    "model": ("Model", "registered model name"),
    "model_params": ("Model parameters", "all model parameters, JSON"),
    "attack": ("Attack family", "registered attack name"),
    "attack_label": ("Attack", "short display label of the attack and its parameters"),
    "attack_params": ("Attack parameters", "all attack parameters, JSON"),
    "rate": ("Poison rate", "fraction of the eligible training rows poisoned, in [0, 1]"),
    "defense": ("Defense", "display label of the defense steps, joined with +"),
    "defense_params": ("Defense parameters", "all defense steps and parameters, JSON"),
    "seed": ("Seed", "the cell's seed"),
    "extra_fraction": (
        "Extra clean data (× training rows)",
        "clean pool rows appended after the defense, as a multiple of the training rows (f)",
    ),
    "n_train": ("Training rows", "rows in the (poisoned) training set"),
    "n_pool": ("Clean pool rows", "rows the extra clean data is drawn from"),
    "n_test": ("Test rows", "clean test rows"),
    "n_poisoned": ("Rows poisoned", "training rows the attack changed"),
    "poison_fraction": ("Poisoned share", "poisoned rows ÷ training rows"),
    "n_removed": ("Rows removed", "training rows the defense removed"),
    "clean_removed": ("Clean rows removed", "removed rows the attack had not changed"),
    "n_extra": ("Extra clean rows", "clean pool rows appended"),
    "accuracy": ("Accuracy", "test accuracy, in [0, 1]"),
    "macro_f1": ("Macro F1", "mean F1 over classes, in [0, 1]"),
    "log_loss": ("Log-loss", "test log-loss (lower is better)"),
    "source_accuracy": (
        "Source-class accuracy",
        "share of source-class test rows predicted correctly (targeted flips)",
    ),
    "attack_success_rate": (
        "Attack success rate",
        "share of source-class test rows predicted as the target (targeted flips; lower is better)",
    ),
    "det_precision": ("Filter precision", "share of removed rows that were poisoned"),
    "det_recall": ("Filter recall", "share of poisoned rows removed"),
    "det_f1": ("Filter F1", "F1 of the removed rows against the poison mask"),
    "det_roc_auc": ("Filter ROC-AUC", "ROC-AUC of the outlier scores against the poison mask"),
    "status": ("Status", "ok, skipped or failed"),
    "error": ("Error", "why a failed cell has no numbers"),
    "mean": ("Mean over seeds", "mean of the metric over seeds"),
    "std": ("Std over seeds", "standard deviation of the metric over seeds"),
    "n": ("Seeds", "number of seeds averaged"),
}


def title(column: str) -> str:
    """The human name of a results-table column (``extra_fraction`` → "Extra clean data (×
    training rows)"); an unlisted column's name with spaces for underscores."""
    known = COLUMNS.get(column)
    if known is not None:
        return known[0]
    text = column.replace("_", " ")
    return text[:1].upper() + text[1:]


def help_text(column: str) -> str:
    """The help text of a column header: what it holds, and its name in the table."""
    known = COLUMNS.get(column)
    about = f"{known[1]}. " if known is not None else ""
    return f"{about}Column `{column}` in results.parquet / results.csv."
