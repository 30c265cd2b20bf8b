"""Parameters: one dataclass, one loader; unknown names, wrong types and out-of-range values name the parameter."""

from __future__ import annotations

import ast
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Literal

import papermill
import pytest

from lib.config import (
    REPO_ROOT, RunConfig, check_value, collect_parameters, default_parameters, load_config, parse_override,
    read_profile,
)
from lib.execute import NOTEBOOK
from tests.conftest import profile

PROFILES = sorted((REPO_ROOT / "params").glob("*.yaml"))


def test_defaults_are_the_official_contract(official_params):
    cfg = RunConfig.from_parameters(official_params)
    assert cfg.model_name == "google/gemma-2b"
    assert (cfg.device, cfg.dtype, cfg.optimizer) == ("cuda", "bfloat16", "adafactor")
    assert 300 <= cfg.max_steps <= 500
    assert cfg.run_dir == "submission_runs/m44_v1"


def test_parameters_cell_equals_the_config_class():
    """papermill reads the cell: its names, literal defaults and annotated types are the dataclass's."""
    cell = papermill.inspect_notebook(str(NOTEBOOK))
    assert {name: ast.literal_eval(p["default"]) for name, p in cell.items()} == default_parameters()
    hints = typing.get_type_hints(RunConfig)
    for name, p in cell.items():
        hint = hints[name]
        expected = "str" if typing.get_origin(hint) is Literal else hint.__name__
        assert p["inferred_type_name"] == expected, name


def test_official_profile_file_equals_the_defaults(official_params):
    assert profile("m44") == official_params


@pytest.mark.parametrize("path", PROFILES, ids=[p.name for p in PROFILES])
def test_every_profile_loads_and_validates(path):
    cfg = load_config(path, {"run_dir": "submission_runs/x"})
    assert set(read_profile(path)) <= set(cfg.to_dict())


def test_every_number_has_a_stated_range():
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        if hints[f.name] in (int, float):
            assert {"min", "max"} <= set(f.metadata), f"parameter {f.name!r} has no stated range"
            assert f.metadata["min"] <= f.default <= f.metadata["max"], f.name


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("max_steps", "400", "'max_steps' must be int, got str"),
        ("max_steps", True, "'max_steps' must be int, got bool"),
        ("max_steps", 2.0, "'max_steps' must be int, got float"),
        ("max_steps", 0, "'max_steps' must be >= 1"),
        ("learning_rate", 2.0, "'learning_rate' must be <= 1.0"),
        ("learning_rate", "2e-5", "write 2.0e-5"),
        ("learning_rate", math.nan, "'learning_rate' must be a finite number, got nan"),
        ("warmup_ratio", math.nan, "'warmup_ratio' must be a finite number"),
        ("max_grad_norm", math.inf, "'max_grad_norm' must be a finite number, got inf"),
        ("seed", 2**64, "'seed' must be <= 4294967295"),
        ("seed", -1, "'seed' must be >= 0"),
        ("device", "mps", "'device' must be one of cuda, cpu"),
        ("optimizer", "sgd", "'optimizer' must be one of adafactor, adamw_torch"),
        ("run_dir", "  ", "'run_dir' must not be empty"),
        ("warmup_ratio", 0.9, "'warmup_ratio' must be <= 0.5"),
        ("model_name", None, "'model_name' must be str, got NoneType"),
        ("telemetry_interval_s", 0.0, "'telemetry_interval_s' must be >= 0.1"),
        ("telemetry_interval_s", "2s", "'telemetry_interval_s' must be float, got str"),
    ],
)
def test_bad_values_name_the_parameter(official_params, name, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        RunConfig.from_parameters({**official_params, name: value})


def test_unknown_and_missing_parameters_are_named(official_params):
    with pytest.raises(ValueError, match="unknown parameter.*'max_stpes'"):
        RunConfig.from_parameters({**official_params, "max_stpes": 10})
    params = dict(official_params)
    del params["seed"]
    with pytest.raises(ValueError, match="missing parameter.*'seed'"):
        RunConfig.from_parameters(params)


def test_int_is_accepted_where_a_float_is_expected(official_params):
    assert RunConfig.from_parameters({**official_params, "max_grad_norm": 1}).max_grad_norm == 1


def test_types_come_from_the_annotations_bool_and_literal_included():
    @dataclass(frozen=True)
    class Sample:
        flag: bool = False
        mode: Literal["none", "fsdp"] = "none"
        count: int = field(default=1, metadata={"min": 1, "max": 8})

    fields = {f.name: f for f in dataclasses.fields(Sample)}
    hints = typing.get_type_hints(Sample)
    check_value(fields["flag"], hints["flag"], True)
    with pytest.raises(ValueError, match="'flag' must be bool"):
        check_value(fields["flag"], hints["flag"], 1)  # an int is no bool
    check_value(fields["mode"], hints["mode"], "fsdp")
    with pytest.raises(ValueError, match="'mode' must be one of none, fsdp, got 'ddp'"):
        check_value(fields["mode"], hints["mode"], "ddp")
    with pytest.raises(ValueError, match="'count' must be <= 8"):
        check_value(fields["count"], hints["count"], 9)


def test_config_is_frozen_and_hash_tracks_values(official_params):
    cfg = RunConfig.from_parameters(official_params)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_steps = 1  # type: ignore[misc]
    assert cfg.sha256() == RunConfig.from_parameters(dict(official_params)).sha256()
    assert cfg.sha256() != dataclasses.replace(cfg, seed=cfg.seed + 1).sha256()


def test_collect_parameters_keeps_literals_only():
    namespace = {
        "max_steps": 5, "max_stpes": 6, "In": [], "Out": {}, "get_ipython": print, "_i1": "x",
        "__name__": "__main__", "lib": dataclasses, "Run": RunConfig, "facts": {"status": "completed"},
    }
    # A misspelt literal stays, so that validation names it; modules, classes and dicts are no parameters.
    assert collect_parameters(namespace) == {"max_steps": 5, "max_stpes": 6}


def test_load_config_layers_defaults_profile_and_overrides():
    cfg = load_config(REPO_ROOT / "params" / "embedded.yaml", {"max_steps": 7, "run_dir": "elsewhere"})
    assert (cfg.model_name, cfg.max_steps, cfg.run_dir) == ("embedded", 7, "elsewhere")
    assert cfg.train_file == default_parameters()["train_file"]  # not in the profile: the default
    with pytest.raises(ValueError, match="unknown parameter.*'bogus'"):
        load_config(None, {"bogus": 1})


def test_profile_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(ValueError, match=r"profile .*absent\.yaml not found"):
        read_profile(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("max_steps: 10\nlearning_rate: [0.1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.yaml line 3, column 1: not valid YAML"):
        read_profile(broken)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("max_step: 10\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"unknown\.yaml: unknown parameter\(s\) 'max_step'"):
        read_profile(unknown)
    listed = tmp_path / "list.yaml"
    listed.write_text("- max_steps\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected a mapping"):
        read_profile(listed)


@pytest.mark.parametrize("text, expected", [
    ("max_steps=300", ("max_steps", 300)),
    ("learning_rate=2.0e-5", ("learning_rate", 2.0e-5)),
    ("learning_rate=2e-5", ("learning_rate", 2e-5)),  # YAML would read this as text
    ("seed=007", ("seed", 7)),
    ("model_name=D:\\models\\gemma-2b", ("model_name", "D:\\models\\gemma-2b")),
    ("device = cpu", ("device", "cpu")),
])
def test_override_parsing(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text, message", [
    ("max_steps", "expected NAME=VALUE"),
    ("=3", "expected NAME=VALUE"),
    ("max_stpes=3", r"unknown parameter\(s\) 'max_stpes'"),
])
def test_bad_overrides_are_refused_by_name(text, message):
    with pytest.raises(ValueError, match=message):
        parse_override(text)
