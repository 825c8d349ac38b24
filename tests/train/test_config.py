import json

import pytest

from mudo_app.errors import InputError
from mudo_app.train.config import TrainConfig, config_from_dict, load_config


def test_defaults_and_ablation_switches():
    c = config_from_dict({"datastore": "x", "filter": "none", "k_points": 1, "teachers": "ct"})
    assert c.method == "muduo" and c.class_ids == tuple(range(1, 14))
    assert c.consensus().filter == "none" and c.consensus().teachers == "ct"
    assert config_from_dict({"classes": "lesion"}).class_ids == (13,)
    assert config_from_dict({"classes": "organs"}).class_ids == tuple(range(1, 13))
    assert config_from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "values,message",
    [
        ({"iterationz": 3}, "unknown config key"),
        ({"iterations": "3"}, "'iterations' must be an integer"),
        ({"iterations": True}, "'iterations' must be an integer"),
        ({"lr": "fast"}, "'lr' must be a number"),
        ({"patch": [64, 64]}, "'patch'"),
        ({"patch": [64, 64, 40]}, "multiple of 16"),
        ({"method": "magic"}, "'method'"),
        ({"filter": "top"}, "'filter'"),
        ({"student": "resnet"}, "'student'"),
        ({"iterations": 0}, "'iterations'"),
        ({"method": "muduo", "batch_unlabelled": 0}, "needs unlabelled"),
        ({"keep_fraction": 0}, "keep_fraction"),
        ({"datastore": None}, "must not be null"),
        ({"device": "tpu"}, "'device'"),
    ],
)
def test_bad_configs_name_the_field(values, message):
    with pytest.raises(InputError, match=message):
        config_from_dict(values)


def test_load_json_and_toml_with_overrides(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"datastore": "d", "iterations": 5}))
    assert load_config(tmp_path / "a.json", {"iterations": 7}).iterations == 7
    (tmp_path / "b.toml").write_text('datastore = "d"\npatch = [32, 32, 32]\nmethod = "supervised"\n')
    c = load_config(tmp_path / "b.toml")
    assert c.patch == (32, 32, 32) and c.method == "supervised" and isinstance(c, TrainConfig)
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_config(tmp_path / "c.json")
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "values,field",
    [
        ({"ema_decay": 1.0}, "'ema_decay'"),
        ({"foreground_prob": 1.5}, "'foreground_prob'"),
        ({"lambda_max": -1.0}, "'lambda_max'"),
        ({"lr": -1.0}, "'lr'"),
        ({"lr": float("nan")}, "'lr'"),
        ({"lr": float("inf")}, "'lr'"),
        ({"lambda_max": float("nan")}, "'lambda_max'"),
        ({"prompt_net_iterations": -1}, "'prompt_net_iterations'"),
        ({"batch_unlabelled": -1}, "'batch_unlabelled'"),
        ({"iou_threshold": 2.0}, "'iou_threshold'"),
        ({"seed": -3}, "'seed'"),
        ({"threads": 0}, "'threads'"),
        ({"lesion_paste": 1.5}, "'lesion_paste'"),
        ({"lesion_paste": float("nan")}, "'lesion_paste'"),
        ({"lesion_weight": 0.0}, "'lesion_weight'"),
        ({"lesion_weight": float("inf")}, "'lesion_weight'"),
    ],
)
def test_each_bad_value_names_its_own_field_only(values, field):
    with pytest.raises(InputError) as err:
        config_from_dict(values)
    message = str(err.value)
    assert message.startswith(f"config field {field}:"), message
    others = {
        "'lr'",
        "'ema_decay'",
        "'foreground_prob'",
        "'lambda_max'",
        "'batch_unlabelled'",
        "'prompt_net_iterations'",
    } - {field}
    assert not any(o in message for o in others), message


def test_consensus_fields_are_declared_once_and_handed_over():
    from dataclasses import fields

    from mudo_app.distill.consensus import ConsensusSettings

    c = config_from_dict({"filter": "threshold", "iou_threshold": 0.3, "keep_fraction": 0.25, "teachers": "pet"})
    assert c.consensus() == ConsensusSettings("threshold", 0.25, 0.3, "pet")
    assert type(c.consensus()) is ConsensusSettings
    names = [f.name for f in fields(TrainConfig)]
    assert all(names.count(f.name) == 1 for f in fields(ConsensusSettings))
    assert TrainConfig().consensus() == ConsensusSettings()  # one set of defaults


def test_prompt_network_length_defaults_to_three_per_iteration_at_most_200():
    assert config_from_dict({"iterations": 10}).prompt_net_steps == 30
    assert config_from_dict({"iterations": 5000}).prompt_net_steps == 200
    assert config_from_dict({"iterations": 10, "prompt_net_iterations": 7}).prompt_net_steps == 7


@pytest.mark.parametrize(
    "values, field",
    [({"iterations": 10**9}, "'iterations'"), ({"seed": 10**30}, "'seed'"), ({"patch": [2048] * 3}, "'patch'")],
)
def test_values_beyond_any_sensible_run_are_refused(values, field):
    with pytest.raises(InputError, match=f"config field {field}: .*at most"):
        config_from_dict(values)
