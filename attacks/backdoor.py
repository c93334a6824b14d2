"""Backdoors: a trigger stamped on a few training rows, which are labelled as a target class.

The model stays accurate on clean inputs and obeys the trigger. Three triggers:

- ``patch``: a k×k square of one value at a corner or a given position (BadNets; Gu, Dolan-Gavitt
  & Garg, 2017). Images only.
- ``blend``: a fixed pattern drawn from ``pattern_seed``, alpha-blended into the row
  (``(1 − alpha)·x + alpha·pattern``; Chen, Liu, Li, Lu & Song, 2017). Images or tables.
- ``features``: chosen feature columns set to a fixed value (a high quantile of the clean train
  set by default, or any ``value``, e.g. one outside the observed range). Tables or images
  (an image's features are its flattened pixels).

Dirty-label mode (the default) triggers ``rate`` of the non-target rows (of the ``source`` class
only, when given) and relabels them as ``target``. ``clean_label: true`` triggers ``rate`` of the
target-class rows and leaves every label as it is: the label-consistent baseline of Turner,
Tsipras & Madry (2019).

The attack declares its test-time trigger (:meth:`Backdoor.apply_trigger`,
:meth:`Backdoor.trigger_rows`): the runner stamps it on the clean test rows whose true class is
not the target and records ``backdoor_asr`` (share predicted as the target) and
``backdoor_robust_acc`` (share still predicted as their true class). Values the trigger takes
from the data (the patch value, the blend pattern's range, a feature quantile) are computed from
the clean train set, the same at training and test time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np

from attacks.base import ATTACKS, Attack
from bench.core.types import DatasetInfo, ParamError, check_fraction, check_range

#: where a patch goes when no ``position`` is given
CORNERS = ("bottom_right", "bottom_left", "top_right", "top_left")


@ATTACKS.register("backdoor")
@dataclass(frozen=True)
class Backdoor(Attack):
    """Stamp a trigger on chosen train rows; dirty-label rows are relabelled as ``target``.

    trigger: ``patch`` (images), ``blend`` or ``features`` (see the module docstring).
    target: the class the trigger leads to (index or name).
    source: dirty-label only: trigger only rows of this class (and measure the attack on its
        test rows); null (the default) makes every non-target class a source.
    clean_label: trigger target-class rows and keep every label (label-consistent).
    size: patch side k in pixels, 1..min(h, w).
    corner: where the patch goes: ``bottom_right`` (the default), ``bottom_left``,
        ``top_right``, ``top_left``; ignored when ``position`` is given.
    position: ``[row, col]`` of the patch's top-left pixel (0-based); the patch must fit.
    value: the patch's pixel value, or the value the ``features`` columns are set to; null:
        the clean train set's maximum (patch) or each column's ``quantile`` (features).
    alpha: blend weight of the pattern, in (0, 1].
    pattern_seed: seed of the blend pattern (uniform within the clean train set's range); a
        fixed pattern, the same for every cell with these parameters.
    features: the feature columns (0-based, flattened for images) of the ``features`` trigger.
    quantile: the clean-train quantile, in [0, 1], each ``features`` column is set to when
        ``value`` is null.
    """

    trigger: Literal["patch", "blend", "features"] = "patch"
    target: int | str = 0
    source: int | str | None = None
    clean_label: bool = False
    size: int = 3
    corner: Literal["bottom_right", "bottom_left", "top_right", "top_left"] = "bottom_right"
    position: tuple[int, ...] | None = None
    value: float | None = None
    alpha: float = 0.2
    pattern_seed: int = 0
    features: tuple[int, ...] = ()
    quantile: float = 0.99

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.clean_label and self.source is not None:
            raise ParamError(
                "source", "not used when clean_label is true (only target-class rows are triggered)"
            )
        if self.source is not None and self.source == self.target:
            raise ParamError("source", f"must differ from target ({self.target!r})")
        check_range(self.size, "size", 1, 10_000)
        check_range(self.alpha, "alpha", 0, 1, low_open=True)
        check_range(self.pattern_seed, "pattern_seed", 0, 2**32 - 1)
        if self.value is not None:  # a trigger value far outside any data's range is a typo
            check_range(self.value, "value", -1e6, 1e6)
        check_fraction(self.quantile, "quantile")
        if self.position is not None and (len(self.position) != 2 or min(self.position) < 0):
            raise ParamError(
                "position", f"must be [row, col] with both >= 0, got {list(self.position)}"
            )
        if self.trigger == "features":
            if not self.features:
                raise ParamError(
                    "features", "required when trigger is 'features' (a list of column indices)"
                )
            if min(self.features) < 0 or len(set(self.features)) != len(self.features):
                raise ParamError(
                    "features", f"must be distinct indices >= 0, got {list(self.features)}"
                )
        elif self.features:
            raise ParamError("features", "only used when trigger is 'features'")
        if self.trigger != "patch" and self.position is not None:
            raise ParamError("position", "only used when trigger is 'patch'")

    def bind(self, info: DatasetInfo, path: str = "") -> Backdoor:
        prefix = f"{path}." if path else ""
        if info.n_classes < 2:
            raise ParamError(f"{prefix}target", f"{info.name} has fewer than two classes")
        target = info.class_index(self.target, f"{prefix}target")
        source = self.source
        if source is not None:
            source = info.class_index(source, f"{prefix}source")
            if source == target:
                raise ParamError(f"{prefix}source", f"must differ from target ({target})")
        if self.trigger == "patch":
            shape = info.image_shape
            if shape is None or len(shape) != 3:
                raise ParamError(
                    f"{prefix}trigger",
                    f"'patch' needs images (c×h×w) but {info.name} is tabular; use 'features' "
                    "or 'blend'",
                )
            _c, h, w = shape
            if self.size > min(h, w):
                raise ParamError(
                    f"{prefix}size",
                    f"a {self.size}×{self.size} patch does not fit {info.name}'s {h}×{w} images",
                )
            row, col = self.patch_origin(h, w)
            if row + self.size > h or col + self.size > w:
                raise ParamError(
                    f"{prefix}position",
                    f"a {self.size}×{self.size} patch at {[row, col]} does not fit "
                    f"{info.name}'s {h}×{w} images (row <= {h - self.size}, "
                    f"col <= {w - self.size})",
                )
        if self.trigger == "features" and max(self.features) >= info.n_features:
            bad = max(self.features)
            raise ParamError(
                f"{prefix}features",
                f"column {bad} is out of range: {info.name} has {info.n_features} features "
                f"(0..{info.n_features - 1})",
            )
        return dataclasses.replace(self, target=target, source=source)

    def label(self) -> str:
        parts = [self.trigger, "clean-label" if self.clean_label else None]
        arrow = f"{'*' if self.source is None else self.source}→{self.target}"
        return f"backdoor({', '.join(p for p in parts if p)}, {arrow})"

    # ------------------------------------------------------------------ rows

    def eligible(self, y: np.ndarray) -> np.ndarray:
        target = int(self.target)  # type: ignore[arg-type]
        if self.clean_label:
            return y == target
        if self.source is not None:
            return y == int(self.source)  # type: ignore[arg-type]
        return y != target

    def backdoor_target(self) -> int | None:
        return int(self.target)  # type: ignore[arg-type]

    def trigger_rows(self, y: np.ndarray) -> np.ndarray:
        """Test rows the attack is measured on: true class not the target (the source's only,
        when a source is given)."""
        if self.source is not None:
            return y == int(self.source)  # type: ignore[arg-type]
        return y != int(self.target)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ trigger

    def patch_origin(self, h: int, w: int) -> tuple[int, int]:
        """(row, col) of the patch's top-left pixel in an h×w image."""
        if self.position is not None:
            return int(self.position[0]), int(self.position[1])
        k = self.size
        row = h - k if self.corner.startswith("bottom") else 0
        col = w - k if self.corner.endswith("right") else 0
        return row, col

    def pattern(self, reference: np.ndarray) -> np.ndarray:
        """The blend pattern: one row's shape, uniform within ``reference``'s min–max."""
        rng = np.random.default_rng(self.pattern_seed)
        low, high = float(reference.min()), float(reference.max())
        return rng.uniform(low, high, size=reference.shape[1:]).astype(np.float32)

    def feature_values(self, reference: np.ndarray) -> np.ndarray:
        """The values the ``features`` columns are set to (``value``, or each column's
        ``quantile`` of ``reference``)."""
        cols = list(self.features)
        if self.value is not None:
            return np.full(len(cols), self.value, dtype=np.float32)
        flat = reference.reshape(len(reference), -1)
        return np.quantile(flat[:, cols].astype(np.float64), self.quantile, axis=0).astype(
            np.float32
        )

    def apply_trigger(self, X: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """A copy of rows ``X`` with the trigger stamped on every one.

        reference: the clean train set, whose values fix the trigger's data-dependent values.
        """
        out = np.array(X, dtype=np.float32, copy=True)
        if len(out) == 0:
            return out
        if self.trigger == "patch":
            h, w = out.shape[-2:]
            row, col = self.patch_origin(h, w)
            value = float(reference.max()) if self.value is None else self.value
            out[..., row : row + self.size, col : col + self.size] = value
        elif self.trigger == "blend":
            pattern = self.pattern(reference)
            out = ((1 - self.alpha) * out + self.alpha * pattern).astype(np.float32)
        else:
            flat = out.reshape(len(out), -1)  # a view
            flat[:, list(self.features)] = self.feature_values(reference)
        return out

    def _poison(
        self, X: np.ndarray, y: np.ndarray, rows: np.ndarray, rng: np.random.Generator
    ) -> None:
        # X is still the clean train set here: the trigger's values come from it.
        X[rows] = self.apply_trigger(X[rows], X)
        if not self.clean_label:
            y[rows] = int(self.target)  # type: ignore[arg-type]
