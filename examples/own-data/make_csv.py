"""Write ``breast_cancer.csv``: scikit-learn's breast cancer data as a user's own table would
look: snake_case column names, the label as text (``diagnosis``: ``malignant`` / ``benign``) and
one text column (``size_band``: ``small`` / ``medium`` / ``large``, the tertile of
``mean_radius``), so that loading it exercises class names and one-hot encoding.

Run from the repository root: ``python examples/own-data/make_csv.py`` (deterministic: the same
bytes every time).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer


def main() -> None:
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.data.copy()
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    cuts = np.quantile(frame["mean_radius"], [1 / 3, 2 / 3])
    bands = np.array(["small", "medium", "large"])
    frame.insert(1, "size_band", bands[np.searchsorted(cuts, frame["mean_radius"], side="right")])
    frame["diagnosis"] = np.asarray(bunch.target_names)[bunch.target]
    out = Path(__file__).with_name("breast_cancer.csv")
    frame.to_csv(out, index=False, float_format="%.6g", lineterminator="\n")
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(frame)} rows)")


if __name__ == "__main__":
    main()
