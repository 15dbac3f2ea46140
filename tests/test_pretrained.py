"""Tests of tokenizer.py's PretrainedTokenizer (a Hugging Face model's own tokenizer behind the
project's interface), offline, on a tiny random GPT-2 checkpoint built here by make_tiny_gpt2
(Qwen's and Llama's tokenizers and models: tests/test_model_families.py).

make_tiny_gpt2(path) is meant for other tests too (an end-to-end run with --init_from=path):
    from test_pretrained import make_tiny_gpt2
"""
import io
import json
import os
import random
import shutil

import pytest
import torch

import ir
import tasks
import tokenizer


def project_corpus(n_programs=40, seed="pretrained"):
    """Programs of the project's world in every language, and their C functions' IR at two levels."""
    programs = [tasks.generate(f"{seed}:{i}")[0] for i in range(n_programs)]
    texts = [tasks.render(p, lang) for p in programs for lang in tasks.LANGS]
    irs = ir.compile_to_ir([tasks.render(p, "c") for p in programs], levels=("O0", "O2"))
    return texts + [text for by_level in irs for text in by_level.values()]


def make_tiny_gpt2(path, vocab_size=512, n_positions=1024, n_layer=2, n_head=2, n_embd=32, seed=0,
                   eos_token=tokenizer.EOT):
    """A Hugging Face GPT-2 checkpoint in path, as a user's downloaded model directory holds one:
    config.json and weights of a random GPT2LMHeadModel, and its tokenizer files, a byte-level BPE
    (GPT-2's own scheme, eos <|endoftext|> like GPT-2's) trained here with the `tokenizers` library
    on the project's corpus. The model's vocabulary is the tokenizer's. Nothing is downloaded.
    Returns path as a string."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(project_corpus(), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[eos_token], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))  # every byte: any text encodes
    hf_tokenizer = GPT2TokenizerFast(tokenizer_object=bpe, bos_token=eos_token, eos_token=eos_token,
                                     unk_token=eos_token)
    hf_tokenizer.save_pretrained(str(path))
    config = GPT2Config(vocab_size=len(hf_tokenizer), n_positions=n_positions, n_layer=n_layer, n_head=n_head,
                        n_embd=n_embd, bos_token_id=hf_tokenizer.eos_token_id, eos_token_id=hf_tokenizer.eos_token_id)
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    return make_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="module")
def both(tiny_gpt2):
    """The pretrained model's tokenizer and the project's BPE, trained on the same corpus."""
    return [tokenizer.load(init_from=tiny_gpt2), tokenizer.train(project_corpus(), 500, tasks.MARKERS)]


def translation_texts():
    """Every source -> target prompt with its reference and end-of-text, and C -> IR ones, for
    programs neither tokenizer was trained on."""
    programs = [tasks.generate(f"unseen:{i}")[0] for i in range(3)]
    texts = [tasks.make_prompt(src, tasks.render(p, src), tgt) + tasks.render(p, tgt) + tasks.EOT
             for p in programs for src in tasks.SOURCE_LANGS for tgt in tasks.LANGS]
    irs = ir.compile_to_ir([tasks.render(p, "c") for p in programs])
    texts += [tasks.make_prompt("c", tasks.render(p, "c"), "llvm") + text + tasks.EOT
              for p, by_level in zip(programs, irs) for text in by_level.values()]
    return texts


def test_round_trip_on_every_language_and_ir(both):
    texts = translation_texts()
    assert {t.split(tasks.TO)[1].split("\n")[0] for t in texts} == set(tasks.LANGS) | {"llvm"}
    odd = "é ☃ \x00 \t\r\n 𝔘 a , b . c ! don't <|to|" + tasks.EOT + tasks.EOT  # no clean-up of spaces
    for tok in both:
        for text in texts:
            ids = tok.encode(text)
            assert tok.decode(ids) == text, type(tok).__name__
            assert ids[-1] == tok.eot and ids.count(tok.eot) == 1
        assert tok.decode(tok.encode(odd)) == odd


def test_eot_is_the_models_eos_and_markers_are_plain_text(tiny_gpt2, both):
    tok = both[0]
    config = json.loads(open(os.path.join(tiny_gpt2, "config.json")).read())
    assert tok.eot == config["eos_token_id"] and tok.encode(tasks.EOT) == [tok.eot]
    assert tok.decode([tok.eot]) == tasks.EOT
    assert tok.n_vocab == config["vocab_size"]  # no token added: the embeddings need no resizing
    for marker in tasks.MARKERS:
        ids = tok.encode(marker)
        assert len(ids) > 1 and tok.eot not in ids and tok.decode(ids) == marker


def test_end_of_text_is_the_eos_token_whatever_the_model_calls_it(tmp_path):
    tok = tokenizer.load(init_from=make_tiny_gpt2(tmp_path, vocab_size=300, eos_token="</s>"))
    text = tasks.make_prompt("python", "def f(a):\n    return a", "go") + "func f(a int) int {\n\treturn a\n}"
    ids = tok.encode(text + tasks.EOT)
    assert ids == tok.encode(text) + [tok.eot] and tok.eot == tok.hf.convert_tokens_to_ids("</s>")
    assert tok.decode(ids) == text + tasks.EOT


def test_decode_takes_every_id_below_n_vocab_and_refuses_the_rest(both):
    rng = random.Random(0)
    for tok in both:
        for i in range(tok.n_vocab):
            assert isinstance(tok.decode([i]), str)
        for _ in range(200):  # any sequence, even one that cuts characters in half
            tok.decode([rng.randrange(tok.n_vocab) for _ in range(rng.randint(0, 20))])
        with pytest.raises(ValueError, match=f"vocabulary of {tok.n_vocab}"):
            tok.decode([3, tok.n_vocab])


def test_a_directory_that_is_no_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    (tmp_path / "broken" / "tokenizer_config.json").write_text("{}")
    for bad, why in [("missing", "not a directory"), ("a_file", "not a directory"),
                     ("empty", "no Hugging Face tokenizer"), ("broken", "cannot load a tokenizer")]:
        with pytest.raises(ValueError, match=why) as error:
            tokenizer.load("data", init_from=str(tmp_path / bad))
        assert str(tmp_path / bad) in str(error.value)


def test_record_round_trip_and_a_changed_tokenizer_is_refused(tiny_gpt2, tmp_path):
    model_dir = shutil.copytree(tiny_gpt2, tmp_path / "model")
    tok = tokenizer.load(init_from=str(model_dir))
    buffer = io.BytesIO()
    torch.save({"tokenizer": tok.record()}, buffer)
    buffer.seek(0)
    record = torch.load(buffer, weights_only=True)["tokenizer"]
    assert record == {"kind": "huggingface", "path": str(model_dir), "sha256": tok.sha256}
    rebuilt = tokenizer.from_record(record)
    text = translation_texts()[0]
    assert rebuilt.encode(text) == tok.encode(text) and (rebuilt.eot, rebuilt.n_vocab) == (tok.eot, tok.n_vocab)

    # another tokenizer saved over the first: the checkpoint's ids would mean other text
    other = make_tiny_gpt2(tmp_path / "other", vocab_size=400)
    for name in tokenizer.HF_TOKENIZER_FILES:
        if os.path.exists(os.path.join(other, name)):
            shutil.copy(os.path.join(other, name), model_dir / name)
    with pytest.raises(ValueError, match="changed since this checkpoint"):
        tokenizer.from_record(record)
    shutil.rmtree(model_dir)
    with pytest.raises(ValueError, match="no longer a directory"):
        tokenizer.from_record(record)


def test_the_checkpoint_loads_in_transformers_with_the_tokenizers_vocabulary(tiny_gpt2, both):
    from transformers import GPT2LMHeadModel
    model = GPT2LMHeadModel.from_pretrained(tiny_gpt2, local_files_only=True)
    ids = both[0].encode(translation_texts()[0])
    logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), both[0].n_vocab)
