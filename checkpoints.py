"""
checkpoints.py: the files a run writes and reads back. sft.pt and oorl.pt hold a finished stage's
model, ckpt.pt the training state a killed run resumes from (its stage, step, optimizer and random
states: training_state). Every one records the model's weights and model_args (GPTConfig's
fields), the run's settings, its tokenizer and its number of ranks, so that what reads it can
refuse what would silently mean something else: token ids of another tokenizer, a resume into
another model, data or number of ranks.

Written atomically (a temporary file, then a rename: a crash while writing leaves the previous
file intact), with tensors and plain data only, and read with torch.load(weights_only=True):
loading a file runs no code, whoever made it.

    import checkpoints
    checkpoints.save("out/sft.pt", model, config=config, tokenizer=tok.record(), world_size=1, stage="sft")
    saved = checkpoints.load("out/sft.pt")                  # a ValueError naming the file if it is none
    checkpoints.check_tokenizer(saved, tok.record(), "out/sft.pt")
    changed = checkpoints.check_resume(saved, config, world_size, tok.record(), "out/ckpt.pt")
    checkpoints.save("out/ckpt.pt", model, **checkpoints.training_state("oorl", 25, optimizer, rng, states), ...)
    start = checkpoints.restore_training_state(saved, "oorl", optimizer, rng, generator, rank)
    checkpoints.trim_metrics("out/metrics.jsonl", saved["stage"], saved["step"])

Nothing to run here: tests/test_checkpoints.py tests it.
"""
import json
import os
import warnings

import torch

# The settings that make a checkpoint the run it is: a resume that changed one of them would train
# another model shape, on other data, or from another start, under the saved run's name.
RUN_SETTINGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "dropout", "init_from", "data_dir", "sft_ckpt")


def save(path, model, **contents):
    """contents with the model's weights and model_args, written atomically. Tensors and plain
    data only, so that loading it runs no code."""
    contents.update(model=model.state_dict(), model_args=vars(model.config))
    torch.save(contents, path + ".tmp")
    os.replace(path + ".tmp", path)


def load(path):
    """A checkpoint written by train.py, on the CPU (the caller moves what belongs on a GPU; RNG
    states must stay on the CPU). weights_only=True: tensors and plain data only, so a crafted
    file cannot run code. A missing, unreadable or foreign file is a ValueError naming it."""
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path}: no such file")
    try:
        with warnings.catch_warnings():  # (random bytes can read as a legacy file, which torch warns of)
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # (random bytes, a truncated file, or a pickle of other objects)
        raise ValueError(f"checkpoint {path}: not a readable checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(checkpoint, dict) or not {"model", "model_args"} <= checkpoint.keys():
        raise ValueError(f"checkpoint {path}: a torch file, but not a checkpoint of this project "
                         f"(it should be a dict with 'model' and 'model_args')")
    return checkpoint


def check_tokenizer(checkpoint, tokenizer_record, path):
    """A ValueError unless the checkpoint was trained with this tokenizer (its record): with another
    one, every token id it learnt would mean other text."""
    if checkpoint.get("tokenizer") != tokenizer_record:
        saved = checkpoint.get("config", {})
        raise ValueError(f"{path} was trained with another tokenizer than this run's (it was trained with "
                         f"data_dir={saved.get('data_dir')!r}, init_from={saved.get('init_from')!r}; was data/ "
                         f"regenerated since?): pass the settings it was trained with")


def check_resume(saved, config, world_size, tokenizer_record, path):
    """A ValueError if resuming the saved training state under config would be a different run:
    another model shape, data, start, tokenizer or number of ranks. Returns the other settings
    that changed (allowed: the caller says so)."""
    differ = [k for k in RUN_SETTINGS if saved["config"].get(k) != config[k]]
    if differ:
        raise ValueError("these settings differ from the saved run's and would change the model or its data: "
                         + ", ".join(f"{k} (saved {saved['config'].get(k)!r}, now {config[k]!r})" for k in differ)
                         + "; start a new out_dir instead")
    if saved["world_size"] != world_size:
        raise ValueError(f"the saved run had {saved['world_size']} ranks, this one {world_size}: "
                         f"resume with the same torchrun --nproc_per_node")
    check_tokenizer(saved, tokenizer_record, path)
    return [k for k in config if k != "resume" and saved["config"].get(k) != config[k]]


def training_state(stage, step, optimizer, rng, generator_states):
    """What ckpt.pt holds beside the model for a killed run to resume from: the stage and its
    steps done, the optimizer, and every random state (the batches' random.Random, each rank's
    torch generator state: CPU tensors, so that a CUDA run resumes too)."""
    return dict(stage=stage, step=step, optimizer=optimizer.state_dict(), python_rng=rng.getstate(),
                generator=generator_states)


def restore_training_state(saved, stage, optimizer, rng, generator, rank):
    """The step a stage starts from: 0, or, when saved is a training state of this stage, its
    step, with the optimizer, rng and this rank's generator restored from it."""
    if saved is None or saved["stage"] != stage:
        return 0
    optimizer.load_state_dict(saved["optimizer"])
    rng.setstate(saved["python_rng"])
    generator.set_state(saved["generator"][rank])
    return saved["step"]


def trim_metrics(path, stage, step):
    """Drop the rows of the metrics file path logged after the training state a run resumes from
    (stage, step): the resumed run logs those steps again."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    keep = [r for r in rows if (r["stage"] == "sft" and (stage == "oorl" or r["step"] < step))
            or (stage == "oorl" and r["stage"] == "oorl" and r["step"] < step)]
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in keep)
    os.replace(path + ".tmp", path)
