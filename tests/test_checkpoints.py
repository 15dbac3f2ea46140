"""Tests of checkpoints.py: a checkpoint written atomically and read back with weights_only=True,
missing, random and foreign files refused by name, and the checks that keep a run from reading a
checkpoint of another tokenizer or resuming into another run."""
import pytest
import torch

import checkpoints
import model

RECORD = {"kind": "bpe", "ranks": "abc"}  # a tokenizer's record: plain data, compared whole
CONFIG = dict(n_layer=2, n_head=4, n_embd=32, block_size=64, bias=True, dropout=0.0, init_from="scratch",
              data_dir="data", sft_ckpt="", resume=False, rl_lr=3e-5, seed=1337)


def tiny_gpt():
    torch.manual_seed(0)
    return model.GPT(model.GPTConfig(block_size=64, vocab_size=97, n_layer=2, n_head=4, n_embd=32, bias=True))


def test_save_then_load_gives_the_model_and_the_run_record(tmp_path):
    gpt, path = tiny_gpt(), str(tmp_path / "sft.pt")
    checkpoints.save(path, gpt, config=CONFIG, tokenizer=RECORD, world_size=1, stage="sft")
    saved = checkpoints.load(path)
    assert saved["model_args"] == vars(gpt.config) and saved["config"] == CONFIG and saved["stage"] == "sft"
    assert all(torch.equal(saved["model"][k], v) for k, v in gpt.state_dict().items())
    assert not (tmp_path / "sft.pt.tmp").exists()


def test_a_save_that_dies_while_writing_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    gpt, path = tiny_gpt(), str(tmp_path / "ckpt.pt")
    checkpoints.save(path, gpt, step=1)

    def dies_half_way(obj, f):
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save(path, gpt, step=2)
    assert checkpoints.load(path)["step"] == 1


def test_load_refuses_missing_random_and_foreign_files(tmp_path):
    with pytest.raises(ValueError, match="nope.pt: no such file"):
        checkpoints.load(str(tmp_path / "nope.pt"))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(ValueError, match="garbage.pt: not a readable checkpoint"):
        checkpoints.load(str(garbage))
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match="tensor.pt: a torch file, but not a checkpoint"):
        checkpoints.load(str(tensor))
    crafted = tmp_path / "crafted.pt"  # an arbitrary object: weights_only refuses to unpickle it
    torch.save({"model": {}, "model_args": {}, "rng": __import__("random").Random(0)}, crafted)
    with pytest.raises(ValueError, match="crafted.pt: not a readable checkpoint"):
        checkpoints.load(str(crafted))


def test_a_checkpoint_of_another_tokenizer_is_refused_naming_what_it_was_trained_with():
    saved = dict(tokenizer=RECORD, config=dict(CONFIG, data_dir="/old/data"))
    checkpoints.check_tokenizer(saved, dict(RECORD), "out/sft.pt")
    for other in (dict(RECORD, ranks="abd"), None):
        with pytest.raises(ValueError, match=r"out/sft.pt was trained with another tokenizer.*'/old/data'"):
            checkpoints.check_tokenizer(saved, other, "out/sft.pt")
    with pytest.raises(ValueError, match="another tokenizer"):  # a checkpoint that records none
        checkpoints.check_tokenizer({"config": CONFIG}, RECORD, "out/sft.pt")


def test_resume_refuses_another_run_and_names_the_settings_that_changed():
    saved = dict(config=CONFIG, world_size=2, tokenizer=RECORD)
    assert checkpoints.check_resume(saved, dict(CONFIG, resume=True), 2, RECORD, "ckpt.pt") == []
    assert checkpoints.check_resume(saved, dict(CONFIG, rl_lr=1e-5, seed=1), 2, RECORD, "ckpt.pt") == ["rl_lr", "seed"]
    with pytest.raises(ValueError, match=r"n_embd \(saved 32, now 64\), data_dir \(saved 'data', now 'd2'\)"):
        checkpoints.check_resume(saved, dict(CONFIG, n_embd=64, data_dir="d2"), 2, RECORD, "ckpt.pt")
    with pytest.raises(ValueError, match="the saved run had 2 ranks, this one 1"):
        checkpoints.check_resume(saved, CONFIG, 1, RECORD, "ckpt.pt")
    with pytest.raises(ValueError, match="ckpt.pt was trained with another tokenizer"):
        checkpoints.check_resume(saved, CONFIG, 2, dict(RECORD, ranks="x"), "ckpt.pt")


def test_a_saved_training_state_restores_the_optimizer_and_every_random_state(tmp_path):
    import random
    gpt, path = tiny_gpt(), str(tmp_path / "ckpt.pt")
    optimizer = torch.optim.AdamW(gpt.parameters(), lr=1e-3)
    gpt(torch.randint(0, 97, (2, 8)))[0].sum().backward()
    optimizer.step()
    rng, generator = random.Random(5), torch.Generator().manual_seed(7)
    state = checkpoints.training_state("oorl", 3, optimizer, rng, [generator.get_state(), generator.get_state()])
    checkpoints.save(path, gpt, **state)
    expected = rng.random(), torch.rand(3, generator=generator)
    saved = checkpoints.load(path)
    fresh = torch.optim.AdamW(gpt.parameters(), lr=1e-3)
    rng, generator = random.Random(0), torch.Generator().manual_seed(0)
    assert checkpoints.restore_training_state(saved, "sft", fresh, rng, generator, rank=1) == 0  # another stage
    assert checkpoints.restore_training_state(None, "oorl", fresh, rng, generator, rank=1) == 0
    assert checkpoints.restore_training_state(saved, "oorl", fresh, rng, generator, rank=1) == 3
    assert (rng.random(), torch.rand(3, generator=generator)[0].item()) == (expected[0], expected[1][0].item())
    assert fresh.state_dict()["state"][0]["step"] == 1


def test_trim_metrics_drops_the_rows_a_resumed_run_logs_again(tmp_path):
    import json
    path = str(tmp_path / "metrics.jsonl")
    rows = [dict(stage="sft", step=s) for s in range(4)] + [dict(stage="oorl", step=s) for s in range(3)]
    for stage, step, kept in [("oorl", 2, rows[:6]), ("sft", 2, rows[:2])]:
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        checkpoints.trim_metrics(path, stage, step)
        assert [json.loads(line) for line in open(path)] == kept
    checkpoints.trim_metrics(str(tmp_path / "none.jsonl"), "sft", 2)  # no metrics yet: nothing to trim
