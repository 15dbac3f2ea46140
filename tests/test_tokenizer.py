"""Tests of tokenizer.py's project BPE: the trainer, tiktoken's file format, encode/decode with the
prompt markers and end-of-text, the checkpoint record and its errors. (The pretrained tokenizer:
tests/test_pretrained.py.)"""
import base64
import io
import json
import random

import pytest
import torch

import tasks
import tokenizer


def corpus(n_programs=40):
    """Programs rendered in every language, as prepare.py's tokenizer corpus holds them."""
    programs = [tasks.generate(f"tok:{i}")[0] for i in range(n_programs)]
    return [tasks.render(p, lang) for p in programs for lang in tasks.LANGS]


@pytest.fixture(scope="module")
def bpe():
    return tokenizer.train(corpus(), vocab_size=500, markers=tasks.MARKERS)


def save_data_dir(tok, path):
    """What prepare.py writes for a tokenizer: the ranks file and meta.json's tokenizer keys."""
    tok.save(str(path))
    (path / "meta.json").write_text(json.dumps(dict(pat_str=tok.pat_str, special_tokens=tok.special_tokens)))


def test_train_merges_the_most_frequent_pair_first():
    tok = tokenizer.train(["ab ab ab ab cd cd"] * 3, vocab_size=256 + 3 + 3, markers=tasks.MARKERS)
    learnt = sorted((rank, token) for token, rank in tok.ranks.items() if rank >= 256)
    # chunks: "ab" x3, " ab" x9, " cd" x6: (a, b) is the most frequent pair (12), then (" ", ab) (9)
    assert [token for _, token in learnt] == [b"ab", b" ab", b" c"]
    assert sorted(tok.ranks.values()) == list(range(len(tok.ranks)))
    assert tok.special_tokens == {tokenizer.EOT: 259, tasks.TRANSLATE: 260, tasks.TO: 261} and tok.eot == 259
    assert tok.n_vocab == 262
    assert tokenizer.train(["ab ab ab ab cd cd"] * 3, 262, tasks.MARKERS).ranks == tok.ranks  # deterministic
    with pytest.raises(ValueError, match="vocab_size"):
        tokenizer.train(["x"], vocab_size=200)


def test_load_reads_tiktoken_files_written_by_hand(tmp_path, monkeypatch):
    ranks = {bytes([b]): b for b in range(256)} | {b"\n ": 256, b" x": 257}
    with open(tmp_path / tokenizer.TOKENIZER_FILE, "wb") as f:  # tiktoken's format, written by hand
        for token, rank in ranks.items():
            f.write(base64.b64encode(token) + b" " + str(rank).encode() + b"\n")
    special = {name: 258 + i for i, name in enumerate((tokenizer.EOT,) + tasks.MARKERS)}
    (tmp_path / "meta.json").write_text(json.dumps(dict(pat_str=tokenizer.PAT_STR, special_tokens=special)))
    tok = tokenizer.load(str(tmp_path))
    text = tasks.make_prompt("python", "def f(a):\n    x = a\n    return x", "lua") + "function f(a) end" + tasks.EOT
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ids[0] == special[tasks.TRANSLATE] and ids[-1] == special[tasks.EOT] == tok.eot
    assert 256 in ids and 257 in ids and tok.n_vocab == 261
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # (no cache: see tokenizer.read_ranks)
    from tiktoken.load import load_tiktoken_bpe
    assert load_tiktoken_bpe(str(tmp_path / tokenizer.TOKENIZER_FILE)) == ranks
    with pytest.raises(FileNotFoundError, match="prepare.py"):
        tokenizer.load(str(tmp_path / "missing"))


def test_save_writes_what_tiktoken_reads(bpe, tmp_path, monkeypatch):
    save_data_dir(bpe, tmp_path)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    from tiktoken.load import load_tiktoken_bpe
    assert load_tiktoken_bpe(str(tmp_path / tokenizer.TOKENIZER_FILE)) == bpe.ranks
    loaded = tokenizer.load(str(tmp_path))
    assert loaded.record() == bpe.record()


def test_round_trip_on_prompts_and_code_of_every_language(bpe):
    for program in [tasks.generate(f"held out:{i}")[0] for i in range(5)]:
        for src in tasks.SOURCE_LANGS:
            for tgt in tasks.LANGS:
                text = tasks.make_prompt(src, tasks.render(program, src), tgt) + tasks.render(program, tgt) + tasks.EOT
                ids = bpe.encode(text)
                assert bpe.decode(ids) == text
                # the markers and end-of-text are one token each, wherever they are in the text
                assert ids[0] == bpe.special_tokens[tasks.TRANSLATE] and ids[-1] == bpe.eot
                assert ids.count(bpe.special_tokens[tasks.TO]) == 1 and ids.count(bpe.eot) == 1
    odd = "é ☃ \x00 \t\r\n 𝔘 <|to|" + tasks.EOT + tasks.EOT  # bytes never seen in training
    assert bpe.decode(bpe.encode(odd)) == odd


def test_decode_takes_every_id_below_n_vocab_and_refuses_the_rest(bpe):
    assert len(bpe.decode(list(range(bpe.n_vocab)))) > 0
    rng = random.Random(0)
    for _ in range(200):  # any sequence, even one that cuts characters in half
        bpe.decode([rng.randrange(bpe.n_vocab) for _ in range(rng.randint(0, 20))])
    with pytest.raises(ValueError, match=f"vocabulary of {bpe.n_vocab}"):
        bpe.decode([1, bpe.n_vocab])
    with pytest.raises(ValueError, match="vocabulary"):
        bpe.decode([-1])


def test_record_is_plain_data_that_survives_a_checkpoint(bpe):
    buffer = io.BytesIO()
    torch.save({"tokenizer": bpe.record()}, buffer)
    buffer.seek(0)
    record = torch.load(buffer, weights_only=True)["tokenizer"]
    assert json.loads(json.dumps(record)) == record == bpe.record()
    rebuilt = tokenizer.from_record(record)
    text = tasks.make_prompt("cpp", "int f(int a) {\n    return a;\n}", "rust") + "fn f" + tasks.EOT
    assert rebuilt.encode(text) == bpe.encode(text) and rebuilt.eot == bpe.eot and rebuilt.n_vocab == bpe.n_vocab


def test_record_does_not_depend_on_data_dir(bpe, tmp_path):
    """A checkpoint decodes with its own tokenizer after data/ is regenerated with another one."""
    save_data_dir(bpe, tmp_path)
    record = tokenizer.load(str(tmp_path)).record()
    other = tokenizer.train(corpus()[:50], vocab_size=300, markers=tasks.MARKERS)
    save_data_dir(other, tmp_path)
    assert tokenizer.load(str(tmp_path)).n_vocab == other.n_vocab != bpe.n_vocab
    assert tokenizer.from_record(record).record() == bpe.record()


def test_from_record_refuses_unknown_or_inconsistent_records(bpe):
    good = bpe.record()
    ranks, special = good["ranks"], good["special_tokens"]
    bad_records = {
        "unknown tokenizer record": [None, [], {}, {"kind": "sentencepiece"}, dict(good, kind="BPE")],
        "missing": [{k: v for k, v in good.items() if k != "ranks"}],
        "twice": [dict(good, ranks=ranks[:-1] + [ranks[300]])],
        "256 bytes": [dict(good, ranks=ranks[1:] + [base64.b64encode(b"zz\x00").decode()])],
        "must follow": [dict(good, special_tokens=dict(special, **{tasks.TO: 9999}))],
        "end-of-text": [dict(good, special_tokens={tasks.TRANSLATE: len(ranks)})],
        "regular expression": [dict(good, pat_str="(unclosed")],
        "inconsistent tokenizer record of kind 'bpe'": [dict(good, ranks=ranks[:-1] + ["not base64!"])],
        "inconsistent tokenizer record of kind 'huggingface'": [{"kind": "huggingface", "path": "/x"}],
    }
    for message, records in bad_records.items():
        for record in records:
            with pytest.raises(ValueError, match=message):
                tokenizer.from_record(record)
