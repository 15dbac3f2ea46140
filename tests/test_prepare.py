"""Tests of prepare.py: a tiny data/ written twice (from two working directories) is identical,
splits are disjoint, every file has the contract's keys, held-out IR groups come from val
programs, the tokenizer loads and round-trips every string, bad settings are named."""
import json
import os
import subprocess
import sys

import pytest

import prepare
import tasks
import tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--n_train=40", "--n_val=6", "--n_test=6", "--n_ir_groups=6", "--n_ir_groups_val=3", "--vocab_size=600",
        "--ir_batch=8"]
FILES = ("tasks_train.jsonl", "tasks_val.jsonl", "tasks_test.jsonl", "ir_groups.jsonl", "ir_groups_val.jsonl",
         "meta.json", tokenizer.TOKENIZER_FILE)
TASK_KEYS = {"id", "program_id", "src_lang", "tgt_lang", "source", "reference", "tests", "prompt", "n_args"}
GROUP_KEYS = {"program_id", "c_source", "prompt", "winners", "winner_levels", "losers", "tests", "n_args"}


def run_prepare(data_dir, *args, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, "prepare.py"), f"--data_dir={data_dir}", *TINY, *args],
                          cwd=cwd, capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The tiny world, prepared twice from the same seed: once from the project directory, once
    from another directory with a data_dir relative to it."""
    first, elsewhere = tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("elsewhere")
    for data_dir, cwd in ((first, ROOT), ("again", elsewhere)):
        result = run_prepare(data_dir, cwd=cwd)
        assert result.returncode == 0, result.stdout + result.stderr
    assert f"writing the data to {elsewhere / 'again'}/" in result.stdout
    return [first, elsewhere / "again"]


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_same_seed_same_files(data):
    for name in FILES:
        assert (data[0] / name).read_bytes() == (data[1] / name).read_bytes(), name


def test_splits_are_disjoint_and_complete(data):
    programs = {}
    for split in ("train", "val", "test"):
        rows = read_jsonl(data[0] / f"tasks_{split}.jsonl")
        programs[split] = {r["program_id"] for r in rows}
        sources = {r["program_id"]: r["source"] for r in rows if r["src_lang"] == "python"}
        assert len(set(sources.values())) == len(sources)  # distinct programs
        pairs = {(r["src_lang"], r["tgt_lang"]) for r in rows}
        assert pairs == {(s, t) for s in tasks.SOURCE_LANGS for t in tasks.LANGS if t != s}
        assert len(rows) == len(programs[split]) * len(pairs)
    assert [len(programs[s]) for s in ("train", "val", "test")] == [40, 6, 6]
    assert not programs["train"] & programs["val"] and not programs["train"] & programs["test"]
    assert not programs["val"] & programs["test"]
    ir_programs = {g["program_id"] for g in read_jsonl(data[0] / "ir_groups.jsonl")}
    assert ir_programs <= programs["train"]


def test_tasks_have_the_contract_keys(data):
    for split in ("train", "val", "test"):
        for row in read_jsonl(data[0] / f"tasks_{split}.jsonl"):
            assert set(row) == TASK_KEYS
            assert row["prompt"] == tasks.make_prompt(row["src_lang"], row["source"], row["tgt_lang"])
            assert tasks.defines_f(row["reference"], row["tgt_lang"]) and tasks.defines_f(row["source"], row["src_lang"])
            assert len(row["tests"]) == prepare.n_tests and row["n_args"] in (1, 2, 3)
            assert all(len(line.split()) == row["n_args"] for line, _ in row["tests"])


def test_ir_groups_have_the_contract_keys(data):
    groups = read_jsonl(data[0] / "ir_groups.jsonl")
    assert len(groups) == 6
    for g in groups:
        assert set(g) == GROUP_KEYS
        assert g["prompt"] == tasks.make_prompt("c", g["c_source"], "llvm")
        assert g["winners"] and g["losers"] and len(g["winner_levels"]) == len(g["winners"])
        assert not set(g["winners"]) & set(g["losers"])
        assert all(tasks.defines_f(ir, "llvm") for ir in g["winners"] + g["losers"])


def test_held_out_ir_groups_come_from_val_programs(data):
    val_groups, train_groups = read_jsonl(data[0] / "ir_groups_val.jsonl"), read_jsonl(data[0] / "ir_groups.jsonl")
    assert len(val_groups) == 3 and all(set(g) == GROUP_KEYS for g in val_groups)
    val_programs = {r["program_id"]: r for r in read_jsonl(data[0] / "tasks_val.jsonl") if r["src_lang"] == "cpp"}
    for g in val_groups:
        assert g["program_id"] in val_programs and g["tests"] == val_programs[g["program_id"]]["tests"]
        assert g["prompt"] == tasks.make_prompt("c", g["c_source"], "llvm") and g["winners"] and g["losers"]
    assert not {g["c_source"] for g in val_groups} & {g["c_source"] for g in train_groups}
    meta = json.loads((data[0] / "meta.json").read_text())
    assert meta["ir_groups_val"] == 3 and meta["settings"]["n_ir_groups_val"] == 3


def test_ir_winners_pass_and_losers_fail(data, tmp_path):
    """Each IR, linked with the C harness of a prototype of f, run on the group's tests."""
    for g in read_jsonl(data[0] / "ir_groups.jsonl")[:2] + read_jsonl(data[0] / "ir_groups_val.jsonl")[:1]:
        prototype = "int f(" + ", ".join(f"int {a}" for a in tasks.ARG_NAMES[:g["n_args"]]) + ");"
        (tmp_path / "main.c").write_text(tasks.harness(prototype, "c", g["n_args"]))
        stdin = "".join(line + "\n" for line, _ in g["tests"])
        expected = "".join(out + "\n" for _, out in g["tests"])
        for ir_text, is_winner in [(w, True) for w in g["winners"]] + [(l, False) for l in g["losers"]]:
            (tmp_path / "f.ll").write_text(ir_text + "\n")
            subprocess.run(["clang", "-w", "main.c", "f.ll", "-o", "prog"], cwd=tmp_path, check=True)
            try:
                out = subprocess.run(["./prog"], cwd=tmp_path, input=stdin, capture_output=True, text=True,
                                     timeout=5).stdout
            except subprocess.TimeoutExpired:
                out = None  # a loser may loop forever: that fails the tests too
            assert (out == expected) == is_winner, ir_text


def test_tokenizer_loads_and_round_trips_every_string(data):
    tok = tokenizer.load(str(data[0]))
    meta = json.loads((data[0] / "meta.json").read_text())
    assert tok.n_vocab == meta["vocab_size"] <= 600
    assert [tasks.EOT, tasks.TRANSLATE, tasks.TO] == list(meta["special_tokens"]) and tok.eot == meta["special_tokens"][tasks.EOT]
    strings = []
    for split in ("train", "val", "test"):
        strings += [r["prompt"] + r["reference"] + tasks.EOT for r in read_jsonl(data[0] / f"tasks_{split}.jsonl")]
    for name in ("ir_groups.jsonl", "ir_groups_val.jsonl"):
        strings += [g["prompt"] + ir + tasks.EOT for g in read_jsonl(data[0] / name) for ir in g["winners"] + g["losers"]]
    for text in strings:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert ids.count(tok.eot) == 1 and ids[-1] == tok.eot
    assert len(tok.encode(strings[0])) < len(strings[0]) / 2  # it does compress


def test_an_empty_data_dir_is_refused_by_name(tmp_path):
    result = run_prepare("", cwd=tmp_path)
    assert result.returncode != 0 and "data_dir is empty" in result.stderr
    assert os.listdir(tmp_path) == []


def test_missing_clang_is_reported_by_name(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH with python and nothing else
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python3")
    result = run_prepare(tmp_path / "data", env=dict(os.environ, PATH=str(bin_dir)))
    assert result.returncode != 0
    assert "clang" in result.stderr and "apt-get install clang" in result.stderr
    assert not (tmp_path / "data" / "meta.json").exists()
