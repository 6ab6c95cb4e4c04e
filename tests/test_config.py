"""Config validation: every bad value raises ConfigError naming the field, the value and what is allowed."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resnet_core import config
from resnet_core.config import ConfigError, ModelConfig, cifar_config, make_config, preset
from resnet_core.limits import LimitError, from_env


def test_presets_have_twins_and_layouts():
    assert preset("resnet50").block == "bottleneck" and preset("resnet50").layers == (3, 4, 6, 3)
    assert preset("plain56") == preset("resnet56").plain_twin()
    assert preset("resnet110").layers == (18, 18, 18)
    assert [preset(f"resnet{d}").depth for d in (18, 34, 50, 101, 152)] == [18, 34, 50, 101, 152]
    assert [preset(f"resnet{d}").depth for d in (20, 32, 44, 56, 110)] == [20, 32, 44, 56, 110]
    assert config.preset_name(preset("resnet32")) == "resnet32"


def test_overrides_are_coerced_from_text():
    cfg = preset("resnet18", layers="1,1,1,1", skip="0", image_size="64", shortcut="c")
    assert cfg.layers == (1, 1, 1, 1) and cfg.skip is False and cfg.image_size == 64 and cfg.shortcut == "C"


@pytest.mark.parametrize(
    "overrides,field,allowed",
    [
        ({"layers": (0, 2, 2)}, "layers", "from 1 to"),
        ({"layers": (-1, 2, 2)}, "layers", "from 1 to"),
        ({"layers": ()}, "layers", "stages"),
        ({"widths": (16, 32)}, "widths", "one width per stage"),
        ({"block": "wide"}, "block", "basic, bottleneck"),
        ({"activation": "swish"}, "activation", "relu"),
        ({"shortcut": "D"}, "shortcut", "A, B, C"),
        ({"style": "sideways"}, "style", "post, pre"),
        ({"init": "xavier"}, "init", "default, kaiming"),
        ({"image_size": 4}, "image_size", "from 8 to"),
        ({"num_classes": 1}, "num_classes", "from 2"),
        ({"skip": "maybe"}, "skip", "true or false"),
        ({"depth": 20}, "depth", "a field of ModelConfig"),
        ({"widths": (2048, 2048, 2048, 2048), "layers": (50, 50, 50, 50)}, "model", "max_params"),
    ],
)
def test_invalid_configs_name_field_value_and_allowed(overrides, field, allowed):
    with pytest.raises(ConfigError) as err:
        preset("resnet20", **overrides)
    assert err.value.field == field
    assert allowed in str(err.value)
    assert field in str(err.value)


def test_unknown_preset_and_bad_cifar_depth():
    with pytest.raises(ConfigError, match="preset='resnet21'.*one of resnet18"):
        preset("resnet21")
    with pytest.raises(ConfigError, match="6n\\+2"):
        cifar_config(21)


def test_round_trip_through_dict():
    cfg = preset("resnet50", skip=False, activation="tanh")
    assert config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError):
        config.from_dict({"block": "basic", "colour": "red"})


def test_limits_read_from_environment():
    limits = from_env({"RESNET_MAX_PARAMS": "1000", "RESNET_MAX_STEPS": "50"})
    assert limits.max_params == 1000 and limits.max_steps == 50
    with pytest.raises(ValueError, match="RESNET_MAX_STEPS"):
        from_env({"RESNET_MAX_STEPS": "lots"})
    assert "RESNET_MAX_STEPS" in str(LimitError("max_steps", 100, 50))


# -- fuzzing: random configs either validate or raise ConfigError, nothing else

values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 3000), st.floats(allow_nan=True),
    st.text(max_size=12), st.lists(st.integers(-2, 300), max_size=8), st.sampled_from(
        ["basic", "bottleneck", "imagenet", "small", "A", "B", "C", "relu", "sigmoid", "pre", "post",
         "kaiming", "default", "1,2,3", "16,32,64", "true", "0"]),
)
names = st.sampled_from([f.name for f in dataclasses.fields(ModelConfig)] + ["depth", "colour"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(names, values, max_size=5))
def test_fuzz_random_configs_only_raise_config_error(overrides):
    try:
        cfg = make_config(ModelConfig(), **overrides)
    except ConfigError as e:
        assert e.field and str(e)
    else:
        assert config.validate(cfg) is cfg
