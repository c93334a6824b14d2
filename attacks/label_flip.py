"""Label flipping: targeted (source → target), random (each row to another class) and boundary
(the rows a clean model is least, or most, sure about, each to its most likely other class)."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from attacks.base import ATTACKS, Attack
from bench.core.types import DatasetInfo, ParamError, Poisoned


@ATTACKS.register("label_flip")
@dataclass(frozen=True)
class LabelFlip(Attack):
    """Flip labels of chosen train rows.

    mode: ``targeted`` relabels ``rate`` of the *source* class's rows as ``target``;
        ``random`` gives ``rate`` of all rows a uniformly drawn *other* class;
        ``boundary`` fits a clean model (standardized features + logistic regression) on the
        rows it receives and flips the rows with the smallest margin ``p(label) − p(dest)``,
        each to its destination ``dest``: the model's most likely *other* class, or ``target``
        when given. Such a flip is plausible to a reviewer and hard for a feature-space outlier
        filter to see; it is not always more damaging (on digits a logistic regression loses
        less accuracy to it than to random flips, an RBF-SVM slightly more).
    source, target: class index or name. Required in targeted mode. Optional in boundary mode:
        ``source`` restricts the eligible rows to that class, ``target`` fixes the destination
        (rows already labelled ``target`` are not eligible). Not allowed in random mode.
    pick: boundary mode only: ``least`` (the default there) flips the rows the clean model is least sure
        about (smallest margin), ``most`` the rows it is most sure about (largest margin).
    """

    mode: Literal["targeted", "random", "boundary"] = "random"
    source: int | str | None = None
    target: int | str | None = None
    pick: Literal["least", "most"] | None = None

    #: number of classes, set by ``bind`` (random flips draw among all classes, even absent ones)
    n_classes: int | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode == "targeted":
            for name in ("source", "target"):
                if getattr(self, name) is None:
                    raise ParamError(
                        name, "required when mode is 'targeted' (a class index or name)"
                    )
            if self.source == self.target:
                raise ParamError("target", f"must differ from source ({self.source!r})")
        elif self.mode == "boundary":
            if self.source is not None and self.source == self.target:
                raise ParamError("target", f"must differ from source ({self.source!r})")
            if self.pick is None:  # one spelling per behaviour, so one cell id
                object.__setattr__(self, "pick", "least")
        elif self.source is not None or self.target is not None:
            name = "source" if self.source is not None else "target"
            raise ParamError(name, "only used when mode is 'targeted' or 'boundary'")
        if self.pick is not None and self.mode != "boundary":
            raise ParamError("pick", "only used when mode is 'boundary'")

    def params(self) -> dict[str, Any]:
        # ``pick`` is left out when unset so the cell ids of the older modes do not change.
        out = super().params()
        if out["pick"] is None:
            del out["pick"]
        return out

    def bind(self, info: DatasetInfo, path: str = "") -> LabelFlip:
        prefix = f"{path}." if path else ""
        if info.n_classes < 2:
            raise ParamError(f"{prefix}mode", f"{info.name} has fewer than two classes")
        source, target = self.source, self.target
        if source is not None:
            source = info.class_index(source, f"{prefix}source")
        if target is not None:
            target = info.class_index(target, f"{prefix}target")
        if source is not None and source == target:
            raise ParamError(f"{prefix}target", f"must differ from source ({source})")
        out = dataclasses.replace(self, source=source, target=target)
        object.__setattr__(out, "n_classes", info.n_classes)
        return out

    def target_pair(self) -> tuple[int, int] | None:
        if self.source is None or self.target is None:
            return None
        return int(self.source), int(self.target)

    def label(self) -> str:
        if self.mode == "targeted":
            return f"label_flip({self.source}→{self.target})"
        if self.mode == "boundary":
            parts = [] if self.pick == "least" else ["most"]
            if self.source is not None or self.target is not None:
                src = "*" if self.source is None else self.source
                dst = "*" if self.target is None else self.target
                parts.append(f"{src}→{dst}")
            return f"label_flip(boundary{''.join(', ' + p for p in parts)})"
        return "label_flip(random)"

    def theory_line(self) -> str | None:
        return "symmetric_label_noise" if self.mode == "random" else None

    def eligible(self, y: np.ndarray) -> np.ndarray:
        if self.mode == "targeted":
            return y == int(self.source)  # type: ignore[arg-type]
        out = np.ones(len(y), dtype=bool)
        if self.mode == "boundary":
            if self.source is not None:
                out &= y == int(self.source)
            if self.target is not None:
                out &= y != int(self.target)
        return out

    def poison_rows(
        self,
        X: np.ndarray,
        y: np.ndarray,
        rate: float,
        rng: np.random.Generator,
        allowed: np.ndarray | None,
    ) -> Poisoned:
        """Poison ``rate`` of the eligible rows; boundary mode ranks them by a clean model."""
        if self.mode != "boundary":
            return super().poison_rows(X, y, rate, rng, allowed)
        y_out = y.copy()
        mask = np.zeros(len(y), dtype=bool)
        candidates, count = self.candidates(y, rate, allowed)
        if count:
            margin, dest = self.flip_margins(X, y, rng)
            sign = -1.0 if self.pick == "most" else 1.0
            # Smallest signed margin first; a random key breaks ties (e.g. a one-class set).
            order = np.lexsort((rng.random(len(candidates)), sign * margin[candidates]))
            rows = np.sort(candidates[order[:count]])
            y_out[rows] = dest[rows]
            mask[rows] = True
        return Poisoned(X.copy(), y_out, mask)

    def flip_margins(
        self, X: np.ndarray, y: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each row's margin ``p(y_i) − p(dest_i)`` in [−1, 1] under a clean model fit on (X, y),
        and its destination class ``dest_i`` (``target``, or the most likely other class)."""
        k = int(y.max()) + 1 if self.n_classes is None else self.n_classes
        proba = np.zeros((len(y), k))
        seed = int(rng.integers(2**31 - 1))
        present = np.unique(y)
        if len(present) >= 2:
            from sklearn.exceptions import ConvergenceWarning
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            flat = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
            model = make_pipeline(
                StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed)
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(flat, y)
            proba[:, model.classes_] = model.predict_proba(flat)
        else:  # one class: the model can only say "that class"
            proba[:, present] = 1.0
        rows = np.arange(len(y))
        if self.target is not None:
            dest = np.full(len(y), int(self.target))
        else:
            # Most likely other class; ties (e.g. classes absent from y) go to a random one.
            perm = rng.permutation(k)
            others = proba[:, perm]
            others[rows, np.argsort(perm)[y]] = -np.inf
            dest = perm[others.argmax(axis=1)]
        return proba[rows, y] - proba[rows, dest], dest.astype(y.dtype)

    def _poison(
        self, X: np.ndarray, y: np.ndarray, rows: np.ndarray, rng: np.random.Generator
    ) -> None:
        if self.mode == "targeted":
            y[rows] = int(self.target)  # type: ignore[arg-type]
            return
        k = int(y.max()) + 1 if self.n_classes is None else self.n_classes
        # Draw from the k-1 other classes: offset 1..k-1 modulo k never returns the same class.
        y[rows] = (y[rows] + rng.integers(1, k, size=len(rows))) % k
