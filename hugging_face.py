"""
hugging_face.py: a Hugging Face GPT-2, Llama, Qwen2 or Qwen3 checkpoint, read offline with
transformers, in model.py's terms: the GPTConfig fields that compute what its config.json
describes, and its weights under model.py's names (q, k and v stacked into one matrix, gate and
up into another, GPT-2's Conv1D matrices transposed). What model.py does not compute (rope
scaling, sliding windows, biases it has no place for, mixtures of experts) is a ValueError naming
the setting, never a model that silently computes something else.

    from model import GPT
    gpt = GPT.from_pretrained("path/to/Qwen3-0.6B")   # the public name; it calls the functions below

It imports no other project file: model.GPT.from_pretrained builds the GPT and hands it here.
Nothing to run here: tests/test_hugging_face.py tests it, tests/test_model_families.py checks the
models it loads against transformers' own forward.
"""
import torch

PRETRAINED_TYPES = ("gpt2", "llama", "qwen2", "qwen3")


def read_config(model_dir):
    """The transformers config of model_dir (its config.json; a name already in the local Hugging
    Face cache works too), read offline: the user fetches the model, nothing is downloaded."""
    import transformers  # imported lazily: only a pretrained start needs it
    try:
        return transformers.AutoConfig.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"{model_dir} is not a Hugging Face model directory (no readable config.json; "
                         f"nothing is downloaded, fetch the model yourself): {e}") from None


def config_from_hugging_face(hf, model_dir, vocab_size=None):
    """The GPTConfig fields (a dict) that compute what a transformers config describes, or a
    ValueError naming every setting of it this GPT does not implement.

    vocab_size keeps only the first vocab_size token embeddings and head rows: Qwen pads its
    table beyond its tokenizer (151936 rows for 151669 tokens), and a sampled id must be one
    the tokenizer can decode (the policy is then the model's, renormalised over those ids)."""
    args = _config_args(hf, model_dir)
    if vocab_size is not None:
        if vocab_size > args["vocab_size"]:
            raise ValueError(f"{model_dir}: its model has {args['vocab_size']} token embeddings, fewer than "
                             f"the {vocab_size} tokens of its tokenizer")
        args["vocab_size"] = vocab_size
    return args


def _config_args(hf, model_dir):
    if hf.model_type not in PRETRAINED_TYPES:
        raise ValueError(f"{model_dir} holds a {hf.model_type!r} model; GPT.from_pretrained loads the "
                         f"{', '.join(PRETRAINED_TYPES)} architectures (dense ones: no mixture of experts)")
    if hf.model_type == "gpt2":
        # what GPT-2's form computes: tanh GELU, plain attention scaling
        unsupported = dict(activation_function=hf.activation_function not in ("gelu_new", "gelu_pytorch_tanh"),
                           scale_attn_by_inverse_layer_idx=hf.scale_attn_by_inverse_layer_idx,
                           scale_attn_weights=not hf.scale_attn_weights)
        _refuse(hf, model_dir, unsupported)
        return dict(block_size=hf.n_positions, vocab_size=hf.vocab_size, n_layer=hf.n_layer,
                    n_head=hf.n_head, n_embd=hf.n_embd, bias=True, norm_eps=hf.layer_norm_epsilon,
                    intermediate_size=hf.n_inner, tie_word_embeddings=hf.tie_word_embeddings)
    # transformers 5 keeps rope_theta and rope_scaling in one dict, rope_parameters; 4.x apart
    rope = getattr(hf, "rope_parameters", None) or dict(getattr(hf, "rope_scaling", None) or {},
                                                        rope_theta=getattr(hf, "rope_theta", 10000.0))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    layer_types = getattr(hf, "layer_types", None) or []
    unsupported = dict(
        rope_scaling=rope_type != "default",  # llama3, yarn, dynamic, ...: plain rotary positions only
        hidden_act=hf.hidden_act != "silu",
        # Llama and Qwen3 put a bias on all four attention projections (Qwen2 on q, k, v only, always)
        attention_bias=getattr(hf, "attention_bias", False),
        mlp_bias=getattr(hf, "mlp_bias", False),
        use_sliding_window=getattr(hf, "use_sliding_window", False),
        layer_types=any(t != "full_attention" for t in layer_types))
    _refuse(hf, model_dir, unsupported, rope_scaling=rope)
    return dict(block_size=hf.max_position_embeddings, vocab_size=hf.vocab_size,
                n_layer=hf.num_hidden_layers, n_head=hf.num_attention_heads, n_embd=hf.hidden_size,
                bias=False, norm="rmsnorm", norm_eps=hf.rms_norm_eps, position="rope",
                rope_theta=float(rope["rope_theta"]), mlp="swiglu", intermediate_size=hf.intermediate_size,
                n_kv_head=getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads,
                head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads,
                qk_norm=hf.model_type == "qwen3", qkv_bias=hf.model_type == "qwen2",
                tie_word_embeddings=hf.tie_word_embeddings)


def _refuse(hf, model_dir, unsupported, **shown):
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ValueError(f"{model_dir}: a {hf.model_type} with settings this GPT does not implement: "
                         + ", ".join(f"{k}={shown.get(k, getattr(hf, k, None))!r}" for k in bad))


def hugging_face_names(model_type, config, ours):
    """{each of our weight names (ours): the checkpoint's weight names it is made of, concatenated
    in order} and the suffixes of our weights that are the checkpoint's transposed. A tied LM head
    is the token embedding: loading one loads both."""
    ours = [k for k in ours if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if model_type == "gpt2":  # the same names; GPT-2 stores its matmuls as Conv1D (in, out), nn.Linear is (out, in)
        transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        return {k: [k] for k in ours}, transposed
    sources = {"transformer.wte.weight": ["model.embed_tokens.weight"],
               "transformer.ln_f.weight": ["model.norm.weight"]}
    for i in range(config.n_layer):
        mine, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
        sources |= {mine + "ln_1.weight": [theirs + "input_layernorm.weight"],
                    mine + "attn.c_attn.weight": [theirs + f"self_attn.{p}_proj.weight" for p in "qkv"],
                    mine + "attn.c_proj.weight": [theirs + "self_attn.o_proj.weight"],
                    mine + "ln_2.weight": [theirs + "post_attention_layernorm.weight"],
                    mine + "mlp.c_fc.weight": [theirs + "mlp.gate_proj.weight", theirs + "mlp.up_proj.weight"],
                    mine + "mlp.c_proj.weight": [theirs + "mlp.down_proj.weight"]}
        if config.qkv_bias:
            sources[mine + "attn.c_attn.bias"] = [theirs + f"self_attn.{p}_proj.bias" for p in "qkv"]
        if config.qk_norm:
            sources |= {mine + "attn.q_norm.weight": [theirs + "self_attn.q_norm.weight"],
                        mine + "attn.k_norm.weight": [theirs + "self_attn.k_norm.weight"]}
    if not config.tie_word_embeddings:
        sources["lm_head.weight"] = ["lm_head.weight"]
    assert sorted(sources) == sorted(ours), sorted(set(sources) ^ set(ours))
    return sources, ()


def read_weights(model_dir):
    """(the checkpoint's weights by its own names, transformers' loading report: the weights its
    class had no place for, or missed), read offline."""
    import transformers
    try:
        hf_model, loading = transformers.AutoModelForCausalLM.from_pretrained(
            model_dir, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as e:  # (RuntimeError: weights of other shapes than config.json's)
        raise ValueError(f"{model_dir}: could not load its weights: {e}") from None
    return hf_model.state_dict(), loading


def copy_weights(model, model_type, sd_hf, loading, model_dir):
    """The checkpoint's weights (read_weights) copied into model, a GPT built from
    config_from_hugging_face's fields."""
    config, sd = model.config, model.state_dict()
    sources, transposed = hugging_face_names(model_type, config, sd)
    # Every weight of the checkpoint must have a place here, and every place a weight: an
    # unmapped one (a bias this GPT lacks) would be dropped silently, a missing one left random,
    # and the model would compute something else. transformers drops a weight its own class
    # has no place for (and reports it), so its report counts as well as our own mapping.
    used = {name for names in sources.values() for name in names}
    derived = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq", "rotary_emb.original_inv_freq")
    unused = sorted(k for k in set(loading["unexpected_keys"]) | (set(sd_hf) - used) if not k.endswith(derived)
                    and not (k == "lm_head.weight" and config.tie_word_embeddings))
    missing = sorted(set(loading["missing_keys"]) | (used - set(sd_hf)))
    if unused or missing:
        raise ValueError(f"{model_dir}: its weights do not match a {model_type} of this GPT's form: "
                         f"weights it has no place for {unused[:5]}, weights missing {missing[:5]}")
    with torch.no_grad():
        for key, names in sources.items():
            src = torch.cat([sd_hf[name] for name in names])  # q, k, v (gate, up) stacked as we keep them
            if key.endswith(transposed):
                src = src.t()
            if key in ("transformer.wte.weight", "lm_head.weight"):
                src = src[:config.vocab_size]
            assert src.shape == sd[key].shape, f"{key}: {tuple(src.shape)} != {tuple(sd[key].shape)}"
            sd[key].copy_(src)
