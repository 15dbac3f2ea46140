"""Tests of hugging_face.py, offline: what model.GPT.from_pretrained refuses by name (a directory
that holds no model or another architecture, settings this GPT does not compute, mixtures of
experts, weights without a place or of other shapes), the embedding table cut to the tokenizer's
ids, and the config.json of small published checkpoints mapped onto a GPT of their size. The
loaded models' numbers against transformers: tests/test_model.py (GPT-2) and
tests/test_model_families.py (Llama, Qwen)."""
import json
import os

import pytest
import torch

import hugging_face
import model
import tokenizer
from test_model_families import hf_model, make_tiny_family


def test_from_pretrained_refuses_what_is_not_a_gpt2_checkpoint(tmp_path):
    import transformers
    with pytest.raises(ValueError, match=f"{tmp_path / 'missing'} is not a Hugging Face model directory"):
        model.GPT.from_pretrained(str(tmp_path / "missing"))
    (tmp_path / "bert").mkdir()
    transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match=f"{tmp_path / 'bert'} holds a 'bert' model; .* loads the gpt2, llama"):
        model.GPT.from_pretrained(str(tmp_path / "bert"))
    (tmp_path / "no_weights").mkdir()
    transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2).save_pretrained(
        tmp_path / "no_weights")
    with pytest.raises(ValueError, match=f"{tmp_path / 'no_weights'}: could not load its weights"):
        model.GPT.from_pretrained(str(tmp_path / "no_weights"))


def test_vocab_size_keeps_the_ids_the_tokenizer_can_decode(tmp_path):
    """Qwen's embedding table is padded beyond its tokenizer (151936 rows for 151669 tokens): with
    vocab_size, the model keeps the tokenizer's ids only, and their logits are the checkpoint's."""
    model_dir = make_tiny_family(tmp_path, "qwen3", vocab_padding=13)
    n_vocab = tokenizer.load(init_from=model_dir).n_vocab
    padded = model.GPT.from_pretrained(model_dir)
    assert padded.config.vocab_size == n_vocab + 13
    gpt = model.GPT.from_pretrained(model_dir, vocab_size=n_vocab).eval()
    assert gpt.config.vocab_size == n_vocab and gpt.lm_head.weight.shape[0] == n_vocab
    idx = torch.randint(0, n_vocab, (2, 12))
    with torch.no_grad():
        assert (gpt(idx, targets=idx)[0] - hf_model(model_dir)(idx).logits[..., :n_vocab]).abs().max() < 1e-4
    with pytest.raises(ValueError, match=f"has {n_vocab + 13} token embeddings, fewer than the {n_vocab + 14}"):
        model.GPT.from_pretrained(model_dir, vocab_size=n_vocab + 14)


@pytest.mark.parametrize("family, overrides, refused", [
    ("llama", dict(rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                     original_max_position_embeddings=8192), rope_theta=5e5), "rope_scaling"),
    ("llama", dict(attention_bias=True), "attention_bias=True"),
    ("llama", dict(mlp_bias=True), "mlp_bias=True"),
    ("llama", dict(hidden_act="gelu"), "hidden_act='gelu'"),
    ("qwen2", dict(use_sliding_window=True, sliding_window=64, max_window_layers=0), "use_sliding_window=True"),
    ("qwen3", dict(use_sliding_window=True, sliding_window=64, max_window_layers=1), "use_sliding_window=True"),
])
def test_what_this_gpt_does_not_compute_is_refused_by_name(tmp_path, family, overrides, refused):
    import transformers
    config_class = dict(qwen3=transformers.Qwen3Config, qwen2=transformers.Qwen2Config,
                        llama=transformers.LlamaConfig)[family]
    config_class(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                 **overrides).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"{tmp_path}: a {family} with settings this GPT does not implement: .*{refused}"):
        model.GPT.from_pretrained(str(tmp_path))


def test_mixtures_of_experts_and_weights_without_a_place_are_refused(tmp_path):
    import transformers
    transformers.Qwen3MoeConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, num_experts=4).save_pretrained(tmp_path / "moe")
    with pytest.raises(ValueError, match="holds a 'qwen3_moe' model; .*no mixture of experts"):
        model.GPT.from_pretrained(str(tmp_path / "moe"))
    # a Qwen2 (biases on q, k and v) that calls itself a Llama (no biases): the biases have no place
    model_dir = make_tiny_family(tmp_path / "disguised", "qwen2")
    config = json.load(open(os.path.join(model_dir, "config.json")))
    config.update(model_type="llama", architectures=["LlamaForCausalLM"])
    json.dump(config, open(os.path.join(model_dir, "config.json"), "w"))
    with pytest.raises(ValueError, match=r"no place for \['model.layers.0.self_attn.k_proj.bias'"):
        model.GPT.from_pretrained(model_dir)
    # weights of other shapes than its config.json says
    config.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"], intermediate_size=64)
    json.dump(config, open(os.path.join(model_dir, "config.json"), "w"))
    with pytest.raises(ValueError, match=f"{model_dir}: could not load its weights"):
        model.GPT.from_pretrained(model_dir)


# config.json of small published checkpoints (their architecture fields), as a user's download holds them
PUBLISHED = {
    "Qwen3-0.6B": dict(architectures=["Qwen3ForCausalLM"], model_type="qwen3", hidden_size=1024, head_dim=128,
                       intermediate_size=3072, num_attention_heads=16, num_hidden_layers=28, num_key_value_heads=8,
                       max_position_embeddings=40960, max_window_layers=28, rms_norm_eps=1e-06, rope_scaling=None,
                       rope_theta=1000000, sliding_window=None, use_sliding_window=False, tie_word_embeddings=True,
                       attention_bias=False, hidden_act="silu", vocab_size=151936),
    "Qwen2.5-0.5B": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=896,
                         intermediate_size=4864, num_attention_heads=14, num_hidden_layers=24, num_key_value_heads=2,
                         max_position_embeddings=32768, max_window_layers=24, rms_norm_eps=1e-06,
                         rope_theta=1000000.0, sliding_window=32768, use_sliding_window=False,
                         tie_word_embeddings=True, hidden_act="silu", vocab_size=151936),
    "SmolLM2-135M": dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=576,
                         intermediate_size=1536, num_attention_heads=9, num_hidden_layers=30, num_key_value_heads=3,
                         max_position_embeddings=8192, rms_norm_eps=1e-05, rope_scaling=None, rope_theta=100000,
                         tie_word_embeddings=True, attention_bias=False, mlp_bias=False, hidden_act="silu",
                         vocab_size=49152),
    "Llama-3.2-1B": dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=2048, head_dim=64,
                         intermediate_size=8192, num_attention_heads=32, num_hidden_layers=16, num_key_value_heads=8,
                         max_position_embeddings=131072, rms_norm_eps=1e-05, rope_theta=500000.0,
                         rope_scaling=dict(factor=32.0, high_freq_factor=4.0, low_freq_factor=1.0,
                                           original_max_position_embeddings=8192, rope_type="llama3"),
                         tie_word_embeddings=True, attention_bias=False, mlp_bias=False, hidden_act="silu",
                         vocab_size=128256),
}


@pytest.mark.parametrize("name, millions", [("Qwen3-0.6B", 596.0), ("Qwen2.5-0.5B", 494.0), ("SmolLM2-135M", 134.5),
                                            ("Llama-3.2-1B", None)])
def test_published_small_checkpoints_map_or_are_refused_by_name(tmp_path, name, millions):
    """The architectures of the small checkpoints a user would start from map onto a GPT of their
    published size (built on the meta device: no memory); Llama 3.2's scaled rotary positions
    are refused, naming rope_scaling."""
    import transformers
    json.dump(PUBLISHED[name], open(tmp_path / "config.json", "w"))
    hf = transformers.AutoConfig.from_pretrained(str(tmp_path), local_files_only=True)
    if millions is None:
        with pytest.raises(ValueError, match="rope_scaling=.*llama3"):
            hugging_face.config_from_hugging_face(hf, str(tmp_path))
        return
    config = model.GPTConfig(**hugging_face.config_from_hugging_face(hf, str(tmp_path)))
    with torch.device("meta"):
        gpt = model.GPT(config)
    assert gpt.get_num_params() / 1e6 == pytest.approx(millions, abs=0.1)
    assert config.rope_theta == PUBLISHED[name]["rope_theta"] and config.tie_word_embeddings
