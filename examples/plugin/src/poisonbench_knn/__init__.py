"""``knn_label_filter``: a poisonbench defense that removes rows whose label disagrees with most
of their k nearest neighbours (the classic edited-nearest-neighbour rule, Wilson 1972).

Label flips put a wrong label inside a region of the feature space that belongs to another
class, so a flipped row's neighbours mostly carry the label it had before the attack. The rule
needs no model and no trusted data; it fails where classes overlap (a clean row near the
boundary looks flipped) and against attacks that move rows along with their labels.

Registered two ways, so the package works installed or not:

- the entry point ``knn_label_filter = poisonbench_knn:KnnLabelFilter`` in the group
  ``poisonbench.defenses`` (``pyproject.toml``): once the package is installed, a config can
  name ``knn_label_filter`` with nothing else;
- the ``@pb.defenses.register`` decorator, so ``plugins: [poisonbench_knn]`` in a config works
  from a checkout on ``PYTHONPATH`` too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import poisonbench as pb

__all__ = ["KnnLabelFilter"]
__version__ = "0.1.0"


@pb.defenses.register("knn_label_filter")
@dataclass(frozen=True)
class KnnLabelFilter(pb.Filter):
    """Remove rows whose label disagrees with the majority of their k nearest neighbours.

    Parameters
    ----------
    k : int
        Neighbours consulted per row (the row itself excluded), >= 1. Fewer when the train set
        is smaller than ``k + 1`` rows.
    agreement : float
        A row is kept when at least this fraction of its neighbours share its label, in
        [0, 1]; 0.5 keeps a row on a tie. Its outlier score is ``1 - agreement`` observed.
    scale : bool
        Standardize each feature before measuring distances (images are flattened first).
    """

    k: int = 10
    agreement: float = 0.5
    scale: bool = True

    def __post_init__(self) -> None:
        if self.k < 1:
            raise pb.ParamError("k", f"{self.k} must be >= 1")
        pb.check_fraction(self.agreement, "agreement")

    def score(
        self, train: pb.TrainingSet, ctx: pb.DefenseContext, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Disagreement scores in [0, 1] (higher = more suspicious) and the rows to remove."""
        from sklearn.neighbors import NearestNeighbors

        n = len(train)
        k = min(self.k, n - 1)
        if k < 1:
            return np.zeros(n), np.zeros(n, dtype=bool)
        X = np.asarray(train.X, dtype=np.float64).reshape(n, -1)
        if self.scale:
            std = X.std(axis=0)
            X = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
        index = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X, return_distance=False)
        is_self = index == np.arange(n)[:, None]
        # with exact duplicates a row may not be its own first neighbour: drop the farthest
        is_self[~is_self.any(axis=1), -1] = True
        neighbours = index[~is_self].reshape(n, k)
        labels = np.asarray(train.y)
        agree = (labels[neighbours] == labels[:, None]).mean(axis=1)
        return 1.0 - agree, agree < self.agreement
