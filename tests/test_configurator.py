"""Tests of configurator.py: good overrides are applied with their types, bad ones are refused."""
import pytest

from configurator import ConfigError, configure


def defaults():
    return dict(batch_size=8, learning_rate=3e-4, compile=False, out_dir="out", top_k=None,
                betas=(0.9, 0.95), pref_loss="gepo")


def test_overrides_are_parsed_as_literals_and_typed():
    config = defaults()
    configure(config, ["--batch_size=16", "--learning_rate=1", "--compile=True", "--out_dir=out/x",
                       "--top_k=50", "--betas=(0.8,0.99)", "--pref_loss=dpo"])
    assert config == dict(batch_size=16, learning_rate=1.0, compile=True, out_dir="out/x", top_k=50,
                          betas=(0.8, 0.99), pref_loss="dpo")
    assert isinstance(config["learning_rate"], float)


def test_config_file_then_overrides_in_order(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text("import math\nbatch_size = 4\nlearning_rate = math.sqrt(1e-6)\n")
    config = defaults()
    was_set = configure(config, [str(path), "--batch_size=2"])
    assert was_set == {"batch_size", "learning_rate"}
    assert config["batch_size"] == 2 and config["learning_rate"] == pytest.approx(1e-3)


def test_unknown_key_names_it_and_the_close_matches():
    with pytest.raises(ConfigError, match=r"unknown config key 'batch_sise'.*batch_size"):
        configure(defaults(), ["--batch_sise=4"])


def test_unknown_key_in_a_config_file_is_an_error(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text("learning_rat = 1e-3\n")
    with pytest.raises(ConfigError, match="learning_rat.*learning_rate"):
        configure(defaults(), [str(path)])


@pytest.mark.parametrize("arg", ["--batch_size=2.5", "--compile=1", "--learning_rate=fast",
                                 "--betas=0.9", "--out_dir=3"])
def test_wrong_types_are_refused(arg):
    with pytest.raises(ConfigError, match=arg[2:].split("=")[0]):
        configure(defaults(), [arg])


def test_malformed_override_is_refused():
    with pytest.raises(ConfigError, match="--key=value"):
        configure(defaults(), ["--batch_size"])
