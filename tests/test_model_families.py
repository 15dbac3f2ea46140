"""Tests of model.py's Llama / Qwen form against transformers, offline, on tiny random Qwen3, Qwen2
and Llama checkpoints built here with transformers' own classes and a tokenizer trained here on
the project's corpus (make_tiny_family): logits equal to transformers' forward in float32, a
KV-cached rollout of ragged prompts equal to the full forward, the fused log-prob kernel on tied
and untied heads, GEPO's group log-probs, checkpoints, the directory's own tokenizer, and (slow)
the smoke config end to end with --init_from and eval.py (what from_pretrained refuses:
tests/test_hugging_face.py).

    python -m pytest tests/test_model_families.py            # -m slow: the end-to-end runs only
"""
import json

import pytest
import torch

import checkpoints
import gepo
import model
import rollout as rollout_module
import tasks
import tokenizer
from logprobs import fused_logprobs
from rollout import sample
from test_pretrained import project_corpus, translation_texts
from test_train import data_dir, run  # noqa: F401 (data_dir: the tiny world's fixture, made once per module)

FAMILIES = ("qwen3", "qwen2", "llama")
# Qwen's pre-tokenizer: its regex cuts the text, then byte-level BPE merges within the pieces
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def make_tokenizer(path, style, vocab_size=512):
    """A Hugging Face tokenizer saved in path, of a family's own kind, trained on the project's corpus:
    "qwen" (Qwen2Tokenizer: regex pieces, byte-level BPE, eos <|endoftext|>), "llama3" (byte-level
    BPE, <|begin_of_text|> put first by its post-processor, eos <|end_of_text|>), "llama2"
    (SentencePiece-style BPE on "▁"-marked words with byte fallback, eos </s>)."""
    import transformers
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    corpus = project_corpus()
    if style == "llama2":
        bpe = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
        bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
        bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size + 256, special_tokens=specials,
                                                            show_progress=False))
        trained = json.loads(bpe.to_str())["model"]
        hf = transformers.LlamaTokenizer(vocab=trained["vocab"], merges=[tuple(m) for m in trained["merges"]])
    elif style == "qwen":
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        trained = json.loads(bpe.to_str())["model"]
        hf = transformers.Qwen2Tokenizer(vocab=trained["vocab"], merges=[tuple(m) for m in trained["merges"]],
                                         eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token=None)
        hf.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    else:
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        bpe.train_from_iterator(corpus, trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"], show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        bpe.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                           special_tokens=[("<|begin_of_text|>", 0)])
        hf = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|begin_of_text|>",
                                                  eos_token="<|end_of_text|>")
    hf.save_pretrained(str(path))
    return hf


def make_tiny_family(path, family, vocab_padding=0, seed=0, **overrides):
    """A Hugging Face checkpoint of a tiny random Qwen3ForCausalLM, Qwen2ForCausalLM or
    LlamaForCausalLM in path, as a user's downloaded model directory holds one (config.json,
    weights, its tokenizer's files). Grouped-query attention (4 query heads, 2 key/value heads);
    Qwen3 with heads wider than hidden_size / heads and a tied head, like Qwen3-0.6B, Qwen2 and
    Llama untied. The norms' weights and Qwen2's biases are random too, so that a weight loaded
    into the wrong place shows in the logits. vocab_padding adds embedding rows beyond the
    tokenizer's, as Qwen's checkpoints have. Returns path as a string."""
    import transformers
    hf_tokenizer = make_tokenizer(path, "llama3" if family == "llama" else "qwen")
    settings = dict(vocab_size=len(hf_tokenizer) + vocab_padding, hidden_size=48, intermediate_size=96,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                    rms_norm_eps=1e-6, eos_token_id=hf_tokenizer.eos_token_id, bos_token_id=hf_tokenizer.bos_token_id)
    settings |= dict(qwen3=dict(head_dim=16, rope_theta=1e6, tie_word_embeddings=True),
                     qwen2=dict(rope_theta=1e6, tie_word_embeddings=False),
                     llama=dict(rope_theta=5e5, tie_word_embeddings=False))[family]
    settings |= overrides
    config_class, model_class = dict(qwen3=(transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
                                     qwen2=(transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
                                     llama=(transformers.LlamaConfig, transformers.LlamaForCausalLM))[family]
    torch.manual_seed(seed)
    hf_model = model_class(config_class(**settings))
    with torch.no_grad():
        for name, p in hf_model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn_like(p))
    hf_model.save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    return {family: make_tiny_family(tmp_path_factory.mktemp(family), family) for family in FAMILIES}


def hf_model(model_dir):
    import transformers
    return transformers.AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).float().eval()


# ----------------------------------------------------------------------------- the model

@pytest.mark.parametrize("family", FAMILIES)
def test_logits_equal_transformers_forward(family_dirs, family):
    gpt = model.GPT.from_pretrained(family_dirs[family]).eval()
    reference = hf_model(family_dirs[family])
    config = gpt.config
    assert (config.norm, config.position, config.mlp, config.n_kv_head) == ("rmsnorm", "rope", "swiglu", 2)
    assert (config.qk_norm, config.qkv_bias) == (family == "qwen3", family == "qwen2")
    assert config.tie_word_embeddings == (family == "qwen3") and config.block_size == 1024
    assert config.head_dim == (16 if family == "qwen3" else 12)
    torch.manual_seed(1)
    idx = torch.randint(0, config.vocab_size, (3, 50))
    with torch.no_grad():
        got, _ = gpt(idx, targets=idx)
        expected = reference(idx).logits
    assert (got - expected).abs().max() < 1e-4


def recording_sampler(monkeypatch):
    """rollout's sample, recording the logits it is given at each decoded token."""
    seen = []

    def recording_sample(logits, *args, **kwargs):
        seen.append(logits.clone())
        return sample(logits, *args, **kwargs)

    monkeypatch.setattr(rollout_module, "sample", recording_sample)
    return seen


@pytest.mark.parametrize("family", FAMILIES)
def test_kv_cached_rollout_of_ragged_prompts_equals_transformers_full_forward(family_dirs, family, monkeypatch):
    """Prompts of 3, 11 and 6 tokens, left-padded in one cache, G = 2 samples each: the logits every
    token is drawn from equal transformers' forward of that row alone (rotary positions count
    from each row's own first token)."""
    gpt = model.GPT.from_pretrained(family_dirs[family]).eval()
    reference = hf_model(family_dirs[family])
    tok = tokenizer.load(init_from=family_dirs[family])
    prompts = [tok.encode(text)[:n] for text, n in zip(translation_texts()[:3], (3, 11, 6))]
    seen = recording_sampler(monkeypatch)
    out = rollout_module.rollout(gpt, prompts, group_size=2, max_new_tokens=12, eot_id=tok.eot,
                                 generator=torch.Generator().manual_seed(0))
    completions = out.completion_lists(with_eot=True)
    for r, completion in enumerate(completions):
        prompt = prompts[r // 2]
        with torch.no_grad():
            expected = reference(torch.tensor([prompt + completion])).logits[0]
        for t in range(len(completion)):
            assert (seen[t][r] - expected[len(prompt) - 1 + t]).abs().max() < 1e-4, (r, t)


@pytest.mark.parametrize("family", ["qwen3", "llama"])  # a tied head and an untied one
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fused_logprobs_on_the_head_equal_transformers_log_softmax(family_dirs, family, backend):
    """token_logprobs' path (hidden states, then the fused kernel on lm_head.weight), both kernels
    (Triton runs in its interpreter without a GPU); gradients reach the head and the embedding
    (one matrix when tied, two when not)."""
    gpt = model.GPT.from_pretrained(family_dirs[family]).eval()
    reference = hf_model(family_dirs[family])
    torch.manual_seed(2)
    idx = torch.randint(0, gpt.config.vocab_size, (2, 20))
    targets = torch.randint(0, gpt.config.vocab_size, (2, 20))
    hidden = gpt.hidden_states(idx)
    logp = fused_logprobs(hidden.reshape(40, -1), gpt.lm_head.weight, targets.reshape(40), 0.8, backend=backend)
    with torch.no_grad():
        expected = torch.log_softmax(reference(idx).logits / 0.8, -1).gather(-1, targets[..., None]).reshape(40)
    assert (logp - expected).abs().max() < 1e-4
    assert torch.allclose(gpt.token_logprobs(idx, targets, 0.8).reshape(40), logp, atol=1e-5)
    logp.sum().backward()
    assert gpt.lm_head.weight.grad.abs().sum() > 0 and gpt.transformer.wte.weight.grad.abs().sum() > 0
    assert (gpt.lm_head.weight is gpt.transformer.wte.weight) == (family == "qwen3")


def test_under_bf16_autocast_every_path_runs_and_stays_close(family_dirs, monkeypatch):
    """The reduced-precision paths a GPU run takes (bf16 autocast, as the CPU can run it): the
    rollout, its KV cache in bf16, and the training forward's log-probs, close to float32's."""
    gpt = model.GPT.from_pretrained(family_dirs["qwen3"]).eval()
    tok = tokenizer.load(init_from=family_dirs["qwen3"])
    prompts = [tok.encode(text)[:n] for text, n in zip(translation_texts()[:2], (4, 9))]
    seen = recording_sampler(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rollout_module.rollout(gpt, prompts, group_size=2, max_new_tokens=10, eot_id=tok.eot,
                                     generator=torch.Generator().manual_seed(1))
        completions = out.completion_lists(with_eot=True)
        idx, targets, mask = model.pack([prompts[r // 2] for r in range(len(completions))], completions, tok.eot)
        with torch.no_grad():
            bf16_logp = gpt.token_logprobs(idx, targets)
    with torch.no_grad():
        fp32_logp = gpt.token_logprobs(idx, targets)
    drawn = torch.stack([torch.log_softmax(logits, -1) for logits in seen], 1)  # (rows, steps, V)
    drawn = drawn.gather(2, out.completions[:, :drawn.size(1), None])[..., 0]
    assert (bf16_logp[mask] - drawn[out.mask[:, :drawn.size(1)]]).abs().max() < 1e-2
    assert (bf16_logp[mask] - fp32_logp[mask]).abs().max() < 5e-2


def test_gepo_group_logps_equal_transformers(family_dirs):
    """GEPO's log pi(y|x) of IR groups' winners and losers (one packed forward)."""
    gpt = model.GPT.from_pretrained(family_dirs["qwen3"]).eval()
    reference = hf_model(family_dirs["qwen3"])
    tok = tokenizer.load(init_from=family_dirs["qwen3"])
    groups = [{"prompt_ids": tok.encode("int f(int a) { return a + 1; }"),
               "winner_ids": [tok.encode("ret i32 %a" + tokenizer.EOT), tok.encode("add" + tokenizer.EOT)],
               "loser_ids": [tok.encode("sub i32 %a, 1" + tokenizer.EOT)]},
              {"prompt_ids": tok.encode("x"), "winner_ids": [tok.encode("y" + tokenizer.EOT)],
               "loser_ids": [tok.encode("z" + tokenizer.EOT), tok.encode("zz" + tokenizer.EOT)]}]
    with torch.no_grad():
        chosen, rejected, chosen_mask, rejected_mask = gepo.group_logps(gpt, groups)

    def hf_logp(prompt, response):
        with torch.no_grad():
            logits = reference(torch.tensor([prompt + response])).logits[0, len(prompt) - 1:-1]
        return torch.log_softmax(logits, -1).gather(1, torch.tensor(response)[:, None]).sum()

    for g, group in enumerate(groups):
        for k, winner in enumerate(group["winner_ids"]):
            assert chosen_mask[g, k] and abs(chosen[g, k] - hf_logp(group["prompt_ids"], winner)) < 1e-4
        for k, loser in enumerate(group["loser_ids"]):
            assert rejected_mask[g, k] and abs(rejected[g, k] - hf_logp(group["prompt_ids"], loser)) < 1e-4


@pytest.mark.parametrize("family", ["qwen3", "qwen2"])
def test_checkpoint_of_a_pretrained_start_rebuilds_the_same_model(family_dirs, family, tmp_path):
    """train.py saves model_args=vars(config) and the state dict: the model they rebuild (a tied
    head, Qwen2's q/k/v biases) computes what the loaded one did, read with weights_only=True."""
    gpt = model.GPT.from_pretrained(family_dirs[family]).eval()
    torch.save({"model": gpt.state_dict(), "model_args": vars(gpt.config)}, tmp_path / "sft.pt")
    rebuilt = model.GPT.from_checkpoint(checkpoints.load(str(tmp_path / "sft.pt"))).eval()
    idx = torch.randint(0, gpt.config.vocab_size, (2, 16))
    assert rebuilt.config == gpt.config and torch.equal(rebuilt(idx)[0], gpt(idx)[0])
    assert (rebuilt.lm_head.weight is rebuilt.transformer.wte.weight) == gpt.config.tie_word_embeddings


# ----------------------------------------------------------------------------- the tokenizer

@pytest.mark.parametrize("style", ["qwen", "llama3", "llama2"])
def test_the_directorys_own_tokenizer_round_trips_and_ends_with_its_eos(tmp_path, style):
    """Qwen's and both Llama generations' tokenizers behind the project's interface: end-of-text
    is the eos token (and no bos is added), the prompt markers are plain text, every translation
    text (and IR) decodes back to itself."""
    hf = make_tokenizer(tmp_path, style)
    tok = tokenizer.load(init_from=str(tmp_path))
    assert tok.eot == hf.eos_token_id and tok.n_vocab == len(hf)
    assert tok.encode(tasks.EOT) == [tok.eot] and tok.decode([tok.eot]) == tasks.EOT
    for text in translation_texts():
        ids = tok.encode(text)
        assert tok.decode(ids) == text and ids.count(tok.eot) == 1 and ids[-1] == tok.eot
        assert hf.bos_token_id is None or hf.bos_token_id not in ids
    for marker in tasks.MARKERS:
        ids = tok.encode(marker)
        assert len(ids) > 1 and tok.eot not in ids and tok.decode(ids) == marker
    odd = "é ☃ \x00 \t\r\n 𝔘 a , b . c ! don't <|to|" + tasks.EOT + tasks.EOT
    assert tok.decode(tok.encode(odd)) == odd


def test_a_sentencepiece_model_counts_in_the_tokenizer_record(tmp_path):
    """Llama 2's descendants ship tokenizer.model (SentencePiece): a checkpoint refuses a changed one."""
    make_tokenizer(tmp_path, "llama2")
    (tmp_path / "tokenizer.model").write_bytes(b"sentencepiece model, version 1")
    record = tokenizer.load(init_from=str(tmp_path)).record()
    (tmp_path / "tokenizer.model").write_bytes(b"sentencepiece model, version 2")
    with pytest.raises(ValueError, match="changed since this checkpoint"):
        tokenizer.from_record(record)


# ----------------------------------------------------------------------------- end to end

@pytest.mark.slow
@pytest.mark.parametrize("family, vocab_padding", [("qwen3", 13), ("llama", 0)])
def test_smoke_run_from_a_tiny_pretrained_directory_then_eval(data_dir, tmp_path, family, vocab_padding):
    """python train.py config/smoke.py --init_from=DIR, both stages, then python eval.py on the
    result, for a tiny random Qwen3 (its embedding table padded beyond its tokenizer, as Qwen's
    are) and a tiny random Llama."""
    model_dir = make_tiny_family(tmp_path / family, family, vocab_padding=vocab_padding)
    out = tmp_path / "out"
    stdout = run("train.py", "config/smoke.py", f"--data_dir={data_dir}", f"--out_dir={out}",
                 f"--init_from={model_dir}", "--sft_steps=3", "--rl_steps=1").stdout
    assert "preset: pretrained" in stdout
    checkpoint = torch.load(out / "oorl.pt", weights_only=True)
    assert checkpoint["tokenizer"]["kind"] == "huggingface"
    assert checkpoint["model_args"]["position"] == "rope" and checkpoint["model_args"]["block_size"] == 1024
    run("eval.py", f"--ckpt={out}/oorl.pt", "--max_tasks_per_pair=1", "--n=1", f"--out_json={tmp_path}/e.json",
        "--probe_groups=")
    result = json.load(open(tmp_path / "e.json"))
    assert result["settings"]["n"] == 1 and sum(result["statuses"].values()) == len(result["counts"])
