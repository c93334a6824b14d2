"""The Python API: :func:`run`, :func:`load`, :func:`compare` and the :class:`Run` they return.

Everything here calls the harness the CLI calls (``bench.run.orchestrate.run_config``,
``bench.analysis.report.write_report``, ``bench.analysis.compare``), so a run started from Python resumes from
the command line and the other way round, and both write the same table.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis.compare import (
    REQUIRED,
    CompareError,
    Comparison,
    compare_tables,
    load_results,
    settings_from,
)
from bench.analysis.recovery import estimate_recovery
from bench.analysis.report import render_report, report_settings, write_report
from bench.core.schema import (
    FALLBACK_METRICS,
    RECOVERY_METRICS,
    SchemaError,
    check_table,
    coerce_table,
)
from bench.core.store import read_run_config, read_run_meta, read_table
from bench.core.types import ParamError, PoisonBenchError
from bench.run.config import Config, ConfigError, load_config, parse_config
from bench.run.session import prepare, run_session


class RunWarning(UserWarning):
    """Something a run found and worked around: a corrupt record file (its cell recomputed),
    a cell that failed (its rows say why), a defense some model cannot train with."""


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------


def _plain(value: Any, path: str) -> Any:
    """``value`` as plain YAML/JSON data (numpy scalars and tuples converted, paths as text).

    The run directory keeps the config as YAML, so a mapping built in Python must hold only
    what YAML can write back; anything else is a ConfigError naming where it is.
    """
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":
        # a numpy scalar -> the Python number or bool; an array (``np.linspace(0, 0.3, 4)``
        # as rates) -> nested lists, checked element by element below
        value = value.tolist()
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {k: _plain(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(
        path or "config",
        f"expected plain data (numbers, text, lists, mappings), got {type(value).__name__}",
    )


def as_config(config: str | os.PathLike | Mapping[str, Any] | Config) -> Config:
    """A validated :class:`bench.run.config.Config` from a YAML path, a mapping or a Config.

    Parameters
    ----------
    config : str, path-like, mapping or Config
        A YAML file (``"configs/quick.yaml"``), the same content as a dict (validated exactly
        like the file; a dict without ``name`` is named ``run``), or an already parsed Config.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        The config is invalid; ``field`` is the path of the offending entry (``rates[0]``).
    """
    if isinstance(config, Config):
        return config
    if isinstance(config, str | os.PathLike):
        return load_config(config)
    if isinstance(config, Mapping):
        try:
            raw = _plain(config, "")
        except RecursionError:
            raise ConfigError("config", "the mapping nests too deeply (or holds itself)") from None
        return parse_config(raw, default_name="run")
    raise TypeError(
        f"config: expected a YAML path, a mapping or a Config, got {type(config).__name__}"
    )


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


class Run:
    """A run directory's results: the table, the settings, the report, the extra-clean estimate.

    Returned by :func:`run` and :func:`load`; the same object either way, built from the files
    in the directory (``results.parquet``, ``run.json``, ``config.yaml``, ``report.md``), each
    read on first use and kept.

    Parameters
    ----------
    path : str or path-like
        The run directory.

    Attributes
    ----------
    path : Path
        The run directory.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._table: pd.DataFrame | None = None
        self._meta: dict[str, Any] | None = None
        self._config: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def table(self) -> pd.DataFrame:
        """The long results table: one row per cell and extra-clean fraction
        (docs/guide/results-table.md; group by the ``*_id`` columns, display the ``*_label`` ones)."""
        if self._table is None:
            self._table = read_table(self.path)
        return self._table

    @property
    def meta(self) -> dict[str, Any]:
        """``run.json``: counts, timings, package versions, datasets, recovery settings."""
        if self._meta is None:
            self._meta = read_run_meta(self.path)
        return self._meta

    @property
    def config(self) -> dict[str, Any]:
        """The config the run saved (``config.yaml``), as a mapping."""
        if self._config is None:
            self._config = read_run_config(self.path)
        return self._config

    @property
    def name(self) -> str:
        """The config's name (the directory's name when run.json has none)."""
        return str(self.meta.get("name") or self.path.name)

    @property
    def summary(self) -> dict[str, Any]:
        """What the last run into this directory did: ``cells``, ``run``, ``cached``,
        ``failed``, ``fits``, ``fits_run``, ``fits_cached``, ``workers``, ``wall_seconds``,
        ``compute_seconds``, ``efficiency`` (from ``run.json``)."""
        return dict(self.meta.get("summary") or {})

    @property
    def report_path(self) -> Path:
        """``report.md`` in the run directory (written by :func:`run`, or by :meth:`report`)."""
        return self.path / "report.md"

    @property
    def failures(self) -> pd.DataFrame:
        """The rows of cells that failed, with their ``error`` (empty when none failed)."""
        table = self.table
        if "status" not in table:
            return table.iloc[:0]
        return table[table["status"] == "failed"].reset_index(drop=True)

    def settings(self) -> dict[str, Any]:
        """The run's recovery settings (``metric``, ``tolerance``, ``bootstrap``,
        ``early_stop``): run.json over config.yaml over the defaults, as the report reads them."""
        return report_settings(self.meta, self.config)

    def recovery(
        self,
        metric: str | None = None,
        tolerance: float | None = None,
        n_boot: int | None = None,
        seed: int = 0,
    ) -> pd.DataFrame:
        """The extra-clean-data estimate: one row per (dataset, model, attack, rate, defense).

        :func:`bench.analysis.recovery.estimate_recovery` over :attr:`table` with the run's settings
        unless given here; the same numbers as the report's headline table (also for a
        backdoor metric: the attacks without a trigger are estimated on accuracy, as the
        ``metric`` column says; ``schema.FALLBACK_METRICS``).

        Parameters
        ----------
        metric : str, optional
            ``accuracy``, ``macro_f1`` or ``attack_success_rate`` (default: the run's).
        tolerance : float, optional
            How close to the clean reference counts as recovered, in the metric's units
            (0.005 = half a percentage point; default: the run's).
        n_boot : int, optional
            Seed-bootstrap resamples for ``f_low``/``f_high`` (default: the run's; 0: none).
        seed : int
            Seeds the bootstrap.

        Returns
        -------
        pandas.DataFrame
            ``f_needed`` (multiples of n_train; ``inf`` when not recovered within the grid),
            ``f_low``/``f_high``, ``rows_needed``, ``defense_value_f``, ... (see
            ``estimate_recovery``).

        Raises
        ------
        ParamError
            ``metric`` is not one of accuracy, macro_f1, attack_success_rate; ``tolerance`` is
            negative or not finite; ``n_boot`` is not an integer >= 0 (``field`` names it).
        PoisonBenchError
            The run has no finished row (every cell failed).
        """
        settings = self.settings()
        metric, tolerance, n_boot = _recovery_arguments(
            settings["metric"] if metric is None else metric,
            settings["tolerance"] if tolerance is None else tolerance,
            settings["bootstrap"] if n_boot is None else n_boot,
        )
        table = self.table
        if metric not in table.columns or not (table["status"] == "ok").any():
            raise PoisonBenchError(
                f"{self.path}: no finished row to estimate recovery from (every cell failed; "
                "their reasons are in Run.failures)"
            )
        return estimate_recovery(
            table,
            metric=metric,
            tolerance=tolerance,
            n_boot=n_boot,
            seed=seed,
            fallback=FALLBACK_METRICS.get(metric),
        )

    def report(
        self,
        metric: str | None = None,
        tolerance: float | None = None,
        out: str | os.PathLike | None = None,
        plot_pairs: int | None = None,
    ) -> Path:
        """(Re)write ``report.md`` and its plots from the table; returns its path.

        Parameters
        ----------
        metric : str, optional
            The headline's recovery metric instead of the run's (as ``poisonbench report
            --metric``): one the table measured, e.g. ``accuracy`` for a backdoor run.
        tolerance : float, optional
            How close to the clean reference counts as recovered, in the metric's units,
            instead of the run's.
        out : str or path-like, optional
            Write the report there (the plots beside it) instead of ``report.md`` here.
        plot_pairs : int, optional
            Draw the plots of at most this many (dataset, model) pairs, those whose worst
            undefended attack costs most (0: all; default:
            :data:`bench.analysis.plots.MAX_PLOT_PAIRS`), as ``poisonbench report --plot-pairs``.

        Raises
        ------
        ParamError
            ``metric`` is not measured in the table (the message lists those that are) or
            ``tolerance`` is not a finite number >= 0 (``field``: ``--metric``, ``--tolerance``).
        """
        limit = {} if plot_pairs is None else {"max_plot_pairs": plot_pairs}
        return write_report(self.path, metric, tolerance, out, **limit)

    def report_markdown(self, metric: str | None = None, tolerance: float | None = None) -> str:
        """The report as markdown text, rendered from the table (nothing written); ``metric``
        and ``tolerance`` as in :meth:`report`."""
        return render_report(self.path, metric=metric, tolerance=tolerance)


def run(
    config: str | os.PathLike | Mapping[str, Any] | Config,
    *,
    jobs: int = 1,
    out: str | os.PathLike | None = None,
    fresh: bool = False,
    progress: bool = True,
    data_dir: str | os.PathLike | None = None,
    executor: str = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    report: bool = True,
    precision: float | None = None,
    max_seeds: int | None = None,
) -> Run:
    """Run a config's grid (finished cells are skipped) and return its :class:`Run`.

    The same as ``poisonbench run``: the same run directory layout, resume and lock, so a run
    started here resumes from the command line and the other way round.

    Parameters
    ----------
    config : str, path-like, mapping or Config
        A YAML file, the same content as a dict, or a parsed Config (see :func:`as_config`).
    jobs : int
        Worker processes (1: in this process, where plug-ins registered by this session's own
        code are visible; with more, every plug-in must be built in, an installed entry point
        or defined in a module the config lists under ``plugins:``).
    out : str or path-like, optional
        The run directory (default, also for ``""``: ``results/runs/<config name>``). It must
        be new, empty or an earlier run's: a folder holding other files is a ConfigError.
    fresh : bool
        Recompute every cell instead of skipping finished ones.
    progress : bool
        Show a progress bar on stderr.
    data_dir : str or path-like, optional
        The data root (overrides the config's ``data_dir``; as ``--data-dir``).
    executor : {"local", "dask", "dask-local"}
        Local processes, a Dask cluster at ``scheduler``, or a local Dask cluster of
        ``workers`` processes.
    scheduler : str, optional
        The Dask scheduler address for ``executor="dask"``.
    workers : int, optional
        Processes for ``executor="dask-local"`` (default ``jobs``).
    report : bool
        Write ``report.md`` and its plots when the run ends (as the CLI does).
    precision : float, optional
        Add seeds in rounds until every headline interval is at most this wide (× n_train), as
        ``--precision`` and ``seeds: {precision: ...}`` (the config's seeds run first).
    max_seeds : int, optional
        The most seeds a group gets with ``precision`` (default: the config's, else 20).

    Returns
    -------
    Run

    Raises
    ------
    ConfigError
        The config is invalid, or names a plug-in worker processes cannot see.
    DatasetError
        A dataset cannot be used (checked for every dataset before any cell runs).
    RunLockedError
        Another live run holds ``out``.
    ExecutorError
        The executor cannot start.
    RunInterrupted
        A KeyboardInterrupt stopped the run; finished cells are saved (run again to resume).

    Warns
    -----
    RunWarning
        For each problem found in the stored records and each distinct reason cells failed.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ParamError("jobs", f"expected an integer >= 1, got {jobs!r}")
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ParamError("workers", f"expected an integer >= 1, got {workers!r}")

    parsed = prepare(as_config(config), data_dir, precision, max_seeds)
    session = run_session(
        parsed,
        out,
        report=report,
        on_warning=lambda problem: warnings.warn(problem, RunWarning, stacklevel=4),
        failure_text=lambda reason, count: (
            f"{count} cell(s) failed: {reason} (their rows are in Run.failures)"
        ),
        jobs=jobs,
        fresh=fresh,
        progress=progress,
        executor=executor,
        scheduler=scheduler,
        workers=workers,
    )
    return Run(session.out)


def _recovery_arguments(metric: Any, tolerance: Any, n_boot: Any) -> tuple[str, float, int]:
    """``Run.recovery``'s arguments checked: ParamError naming the argument otherwise."""
    if metric not in RECOVERY_METRICS:
        raise ParamError("metric", f"{metric!r} is not one of {', '.join(RECOVERY_METRICS)}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real):
        raise ParamError("tolerance", f"expected a number, got {tolerance!r}")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ParamError("tolerance", f"must be a finite number >= 0, got {tolerance}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 0:
        raise ParamError("n_boot", f"expected an integer >= 0, got {n_boot!r}")
    return str(metric), float(tolerance), int(n_boot)


def load(run_dir: str | os.PathLike) -> Run:
    """The :class:`Run` of an existing run directory (nothing is computed).

    Parameters
    ----------
    run_dir : str or path-like
        A directory a run wrote (holding ``results.parquet`` or ``results.csv``).

    Returns
    -------
    Run

    Raises
    ------
    PoisonBenchError
        ``run_dir`` does not exist or holds no results table.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise PoisonBenchError(f"{path}: no such run directory")
    if not any((path / name).is_file() for name in ("results.parquet", "results.csv")):
        raise PoisonBenchError(
            f"{path} holds no results.parquet or results.csv (not a run directory, or a run "
            "that never finished a first pass: run its config again to resume)"
        )
    return Run(path)


def compare(
    base: Run | str | os.PathLike | pd.DataFrame,
    new: Run | str | os.PathLike | pd.DataFrame,
    *,
    metrics: list[str] | tuple[str, ...] | None = None,
    k: float | None = None,
    floors: Mapping[str, float] | None = None,
) -> Comparison:
    """Compare two runs as the CI gate does (``poisonbench compare``), as data.

    Parameters
    ----------
    base, new : Run, str, path-like or pandas.DataFrame
        A :class:`Run`, a run directory, a results table file, or a results table. The recovery
        metric and tolerance come from ``base``'s ``run.json`` when it has one.
    metrics : list of str, optional
        Metrics to judge (default: accuracy, macro_f1, attack_success_rate, det_recall,
        f_needed).
    k : float, optional
        Tolerance in pooled standard errors (default 3).
    floors : mapping, optional
        Smallest change that counts, per metric (defaults 0.02; f_needed 0.25 × n_train).

    Returns
    -------
    bench.analysis.compare.Comparison
        ``exit_code`` (0: no regression, 1: a regression), ``regressions`` and
        ``improvements`` (DataFrames of judged checks), ``checks``, ``skipped``,
        ``only_in_base``, ``only_in_new``, ``failed_in_new``, ``to_markdown()``, ``to_json()``.

    Raises
    ------
    CompareError
        An input is unusable (missing, unreadable, no common cells, unknown metric).
    """

    def side(value: Any, name: str) -> tuple[pd.DataFrame, dict[str, Any], str]:

        if isinstance(value, pd.DataFrame):
            table = coerce_table(value)
            try:
                check_table(table, REQUIRED, name)
            except SchemaError as exc:
                raise CompareError(str(exc)) from None
            if table.empty:
                raise CompareError(f"{name}: results table has no rows")
            return table, {}, name
        if isinstance(value, Run):
            value = value.path
        table, meta = load_results(value)
        return table, meta, str(value)

    table_b, meta_b, name_b = side(base, "BASE")
    table_n, _, name_n = side(new, "NEW")
    settings = settings_from(meta_b, metrics, k, dict(floors) if floors is not None else None)
    return compare_tables(table_b, table_n, settings, name_b, name_n)
