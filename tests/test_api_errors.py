"""The Python API raises the project's errors, naming the field (issue 28, item 12): never a
plain ValueError for a numpy array in a dict config, an all-failed run's recovery, or a bad
recovery argument."""

from __future__ import annotations

import math

import numpy as np
import pytest

import poisonbench as pb
from bench.core.types import ParamError, PoisonBenchError
from bench.run.config import parse_config
from bench.run.orchestrate import run_config
from tests.tiny import tiny

TINY = tiny()


def test_numpy_arrays_in_a_dict_config_are_plain_lists():
    from poisonbench.api import as_config

    parsed = as_config({**TINY, "rates": np.array([0, 0.2]), "seeds": np.int64(1)})
    assert list(parsed.rates) == [0.0, 0.2]
    with pytest.raises(pb.ConfigError) as err:
        as_config({**TINY, "rates": np.array([0, 2.0])})
    assert err.value.field.startswith("rates")
    with pytest.raises(pb.ConfigError) as err:
        as_config({**TINY, "rates": [0, object()]})
    assert err.value.field == "rates[1]"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "ok"
    run_config(parse_config(TINY), out, jobs=1, progress=False)
    return pb.load(out)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"metric": "bogus"}, "metric"),
        ({"tolerance": -1}, "tolerance"),
        ({"tolerance": math.nan}, "tolerance"),
        ({"tolerance": "0.1"}, "tolerance"),
        ({"n_boot": -3}, "n_boot"),
    ],
)
def test_recovery_arguments_are_param_errors_naming_the_argument(finished, kwargs, field):
    with pytest.raises(ParamError) as err:
        finished.recovery(**kwargs)
    assert err.value.field == field
    assert len(finished.recovery(n_boot=0)) == 2  # the valid call still works


def test_recovery_of_a_run_whose_every_cell_failed(tmp_path):
    model = {"name": "sklearn", "estimator": "tests.plugin_bad_models.NaNProba"}
    out = tmp_path / "failed"
    run_config(parse_config({**TINY, "models": [model]}), out, jobs=1, progress=False)
    failed = pb.load(out)
    with pytest.raises(PoisonBenchError, match="no finished row to estimate recovery from"):
        failed.recovery()
