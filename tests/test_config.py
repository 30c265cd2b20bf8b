"""Parameter validation: unknown names, wrong types and out-of-range values name the parameter."""

from __future__ import annotations

import dataclasses
import types

import pytest

from lib.config import RunConfig, collect_parameters
from tests.conftest import profile


def test_notebook_defaults_are_the_official_contract(official_params):
    cfg = RunConfig.from_parameters(official_params)
    assert cfg.model_name == "google/gemma-2b"
    assert (cfg.device, cfg.dtype, cfg.optimizer) == ("cuda", "bfloat16", "adafactor")
    assert 300 <= cfg.max_steps <= 500
    assert cfg.run_dir == "submission_runs/m44_v1"


def test_parameters_cell_declares_exactly_the_config_fields(official_params):
    assert set(official_params) == {f.name for f in dataclasses.fields(RunConfig)}


def test_embedded_profile_validates(embedded_cfg):
    assert embedded_cfg.uses_embedded_model and embedded_cfg.device == "cpu"


def test_profile_files_only_name_known_parameters():
    known = {f.name for f in dataclasses.fields(RunConfig)}
    assert set(profile("embedded")) <= known


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("max_steps", "400", "'max_steps' must be int, got str"),
        ("max_steps", True, "'max_steps' must be int, got bool"),
        ("max_steps", 0, "'max_steps' must be >= 1"),
        ("learning_rate", 2.0, "'learning_rate' must be <= 1.0"),
        ("device", "mps", "'device' must be one of cuda, cpu"),
        ("optimizer", "sgd", "'optimizer' must be one of adafactor, adamw_torch"),
        ("run_dir", "  ", "'run_dir' must not be empty"),
        ("warmup_ratio", 0.9, "'warmup_ratio' must be <= 0.5"),
    ],
)
def test_bad_values_name_the_parameter(official_params, name, value, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_parameters({**official_params, name: value})


def test_unknown_and_missing_parameters_are_named(official_params):
    with pytest.raises(ValueError, match="unknown parameter.*'max_stpes'"):
        RunConfig.from_parameters({**official_params, "max_stpes": 10})
    params = dict(official_params)
    del params["seed"]
    with pytest.raises(ValueError, match="missing parameter.*'seed'"):
        RunConfig.from_parameters(params)


def test_bfloat16_on_cpu_is_refused(official_params):
    with pytest.raises(ValueError, match="'dtype'"):
        RunConfig.from_parameters({**official_params, "device": "cpu"})


def test_int_is_accepted_where_a_float_is_expected(official_params):
    assert RunConfig.from_parameters({**official_params, "max_grad_norm": 1}).max_grad_norm == 1


def test_config_is_frozen_and_hash_tracks_values(official_params):
    cfg = RunConfig.from_parameters(official_params)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_steps = 1  # type: ignore[misc]
    assert cfg.sha256() == RunConfig.from_parameters(dict(official_params)).sha256()
    assert cfg.sha256() != dataclasses.replace(cfg, seed=cfg.seed + 1).sha256()


def test_collect_parameters_skips_kernel_names_and_modules():
    namespace = {
        "max_steps": 5, "In": [], "Out": {}, "get_ipython": print, "_i1": "x",
        "__name__": "__main__", "lib": types.ModuleType("lib"),
    }
    assert collect_parameters(namespace) == {"max_steps": 5}


def test_official_profile_file_equals_the_notebook_defaults(official_params):
    assert profile("m44") == official_params
