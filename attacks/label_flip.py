"""Label flipping: targeted (source → target) and random (each row to another class)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from attacks.base import ATTACKS, Attack
from bench.types import DatasetInfo, ParamError


@ATTACKS.register("label_flip")
@dataclass(frozen=True)
class LabelFlip(Attack):
    """Flip labels of chosen train rows.

    mode: ``targeted`` relabels ``rate`` of the *source* class's rows as ``target``;
        ``random`` gives ``rate`` of all rows a uniformly drawn *other* class.
    source, target: class index or name (targeted mode only).
    """

    mode: Literal["targeted", "random"] = "random"
    source: int | str | None = None
    target: int | str | None = None

    #: number of classes, set by ``bind`` (random flips draw among all classes, even absent ones)
    n_classes: int | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode == "targeted":
            for name in ("source", "target"):
                if getattr(self, name) is None:
                    raise ParamError(
                        name, "required when mode is 'targeted' (a class index or name)"
                    )
            if self.source == self.target:
                raise ParamError("target", f"must differ from source ({self.source!r})")
        elif self.source is not None or self.target is not None:
            raise ParamError("source", "only used when mode is 'targeted'")

    def bind(self, info: DatasetInfo, path: str = "") -> LabelFlip:
        prefix = f"{path}." if path else ""
        if info.n_classes < 2:
            raise ParamError(f"{prefix}mode", f"{info.name} has fewer than two classes")
        if self.mode != "targeted":
            out = dataclasses.replace(self)
            object.__setattr__(out, "n_classes", info.n_classes)
            return out
        source = info.class_index(self.source, f"{prefix}source")
        target = info.class_index(self.target, f"{prefix}target")
        if source == target:
            raise ParamError(f"{prefix}target", f"must differ from source ({source})")
        return dataclasses.replace(self, source=source, target=target)

    def target_pair(self) -> tuple[int, int] | None:
        if self.mode != "targeted":
            return None
        return int(self.source), int(self.target)  # type: ignore[arg-type]

    def label(self) -> str:
        if self.mode == "targeted":
            return f"label_flip({self.source}→{self.target})"
        return "label_flip(random)"

    def eligible(self, y: np.ndarray) -> np.ndarray:
        if self.mode == "targeted":
            return y == int(self.source)  # type: ignore[arg-type]
        return np.ones(len(y), dtype=bool)

    def _poison(
        self, X: np.ndarray, y: np.ndarray, rows: np.ndarray, rng: np.random.Generator
    ) -> None:
        if self.mode == "targeted":
            y[rows] = int(self.target)  # type: ignore[arg-type]
            return
        k = int(y.max()) + 1 if self.n_classes is None else self.n_classes
        # Draw from the k-1 other classes: offset 1..k-1 modulo k never returns the same class.
        y[rows] = (y[rows] + rng.integers(1, k, size=len(rows))) % k
