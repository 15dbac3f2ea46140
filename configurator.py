"""
configurator.py: nanoGPT-style configuration overrides, with checks.

A script keeps its configuration as module globals at the top, then calls

    configure(globals(), sys.argv[1:])

so that `python train.py config/smoke.py --batch_size=8 --pref_loss=dpo` first runs the config
file (plain Python assigning some of those globals), then applies each --key=value. Values are
read as Python literals (`--lr=3e-4`, `--compile=False`, `--betas=(0.9,0.95)`), or as a string
when they are not one (`--out_dir=out/x`). Every key must already be a global of the script and
every value must have the type of its default: a typo or a wrong type is an error that names the
key (and the close matches), never a silently ignored setting.

What the user gives wins over everything else. A script then fills the keys the user left alone,
with fill_unset, from one of two sources:

    a preset file (config/cpu.py, config/gpu.py, config/pretrained.py): the settings sized for a
        machine, which train.py picks by the device and init_from of the run (preset=auto);
    a resumed run's saved settings: a run that continues keeps its own settings for every key
        not given again, so `--resume=True` alone continues exactly the run that stopped, and
        `--resume=True --rl_steps=40` extends it.
"""
import ast
import difflib
import os


class ConfigError(ValueError):
    pass


def _check_type(key, value, default):
    """value converted to the type of default (int -> float is allowed), or a ConfigError."""
    if default is None or value is None:
        return value  # a default of None (e.g. top_k) takes any literal; None switches a setting off
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) and isinstance(value, bool):
            return value
    elif isinstance(default, float) and isinstance(value, int):
        return float(value)
    elif isinstance(default, (tuple, list)) and isinstance(value, (tuple, list)):
        return type(default)(value)
    elif isinstance(value, type(default)):
        return value
    raise ConfigError(f"config key {key!r} wants a {type(default).__name__} (default {default!r}), "
                      f"got {value!r} of type {type(value).__name__}")


def _unknown_key(key, config):
    close = difflib.get_close_matches(key, list(config), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def _parse_literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # not a Python literal: a plain string such as a path


def say(text):
    """Print once: under torchrun only rank 0 speaks (every rank reads the same settings)."""
    if os.environ.get("RANK", "0") == "0":
        print(text)


def snapshot(config):
    """The settings of a script: its globals that hold a plain value (number, bool, str, None,
    tuple, list), by name. What --key=value may set, and what a checkpoint records."""
    return {k: v for k, v in config.items() if not k.startswith("_")
            and isinstance(v, (int, float, bool, str, tuple, list, type(None)))}


def read_file(path):
    """The settings a config file assigns, {key: value} (plain Python, run as nanoGPT does)."""
    with open(path) as f:
        source = f.read()
    scope = {}
    exec(compile(source, path, "exec"), scope)
    return {k: v for k, v in scope.items() if not k.startswith("_") and not callable(v)
            and type(v).__name__ != "module"}


def fill_unset(config, values, was_set, source, strict=True):
    """Set each key of values that the user did not set (not in was_set), type-checked, and say
    so once. strict=False skips keys the script no longer has (a saved run's old settings)."""
    settable = snapshot(config)
    for key, value in values.items():
        if key not in settable:
            if strict:
                raise _unknown_key(key, settable)
            continue
        if key not in was_set:
            config[key] = _check_type(key, value, settable[key])
    say(f"config: {source} fills the settings not given")


def configure(config, args):
    """Apply config files (args without --) and --key=value overrides to the dict config
    (a script's globals()), in order. Only keys that are already in config may be set; the
    settable keys are those whose default is a plain value (number, bool, str, None, tuple).
    Returns the set of keys that were set (a script applies presets to the others only)."""
    settable = snapshot(config)
    was_set = set()
    for arg in args:
        if not arg.startswith("--"):
            items = list(read_file(arg).items())
            say(f"config: {arg}")
        else:
            key, sep, text = arg[2:].partition("=")
            if not sep:
                raise ConfigError(f"override {arg!r} must look like --key=value")
            items = [(key, _parse_literal(text))]
        for key, value in items:
            if key not in settable:
                raise _unknown_key(key, settable)
            value = _check_type(key, value, settable[key])
            config[key] = settable[key] = value
            was_set.add(key)
            say(f"config: {key} = {value!r}")
    return was_set
