from dataclasses import dataclass

import pytest

from preftune.config import describe, from_dict, load_config, opt, save_config
from preftune.train.configs import TrainConfig


def test_yaml_then_overrides_and_nested(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("model: tiny-llama\ndata: d.jsonl\nout: r\nlr: 0.001\nlora:\n  r: 4\n")
    cfg = load_config(TrainConfig, y, ["lr=2e-4", "lora.enabled=true", "batch_size=3"])
    assert cfg.lr == 2e-4 and cfg.lora.enabled is True and cfg.lora.r == 4 and cfg.batch_size == 3
    save_config(cfg, tmp_path / "saved.yaml")
    again = load_config(TrainConfig, tmp_path / "saved.yaml")
    assert again == cfg


def test_unknown_key_and_bad_value_name_the_key():
    base = {"model": "m", "data": "d", "out": "o"}
    with pytest.raises(ValueError, match="unknown config key 'lerning_rate'"):
        from_dict(TrainConfig, {**base, "lerning_rate": 1})
    with pytest.raises(ValueError, match="unknown config key 'lora.rank'"):
        from_dict(TrainConfig, {**base, "lora": {"rank": 2}})
    with pytest.raises(ValueError, match="batch_size: must be an integer"):
        from_dict(TrainConfig, {**base, "batch_size": "eight"})
    with pytest.raises(ValueError, match="'data' is required"):
        from_dict(TrainConfig, {"model": "m", "out": "o"})
    with pytest.raises(ValueError, match="on_overlong"):
        from_dict(TrainConfig, {**base, "on_overlong": "crop"})


def test_describe_lists_every_field_with_help():
    @dataclass
    class C:
        a: int = opt(1, "the a")
    assert describe(C).strip() == "a=1  the a"
    text = describe(TrainConfig)
    assert "lora.r=16" in text and "max_length=1024" in text
