"""
train.py: OORL in miniature, end to end.

Stage 1, SFT: next-token loss on the completions of translation pairs (every source -> every
target, the held-out targets included) and of C -> LLVM IR pairs.                  => out/sft.pt
Stage 2, OORL (paper eq. 10): each step samples prompts from the RL split, rolls out G
completions per prompt, scores them by running their unit tests (eq. 4), and takes
    L = w_rl * L_OnP (eq. 5, REINFORCE++ advantages, KL to the frozen SFT model)
      + w_gepo * L_GEPO (eqs. 6-9, on a batch of static IR groups).                 => out/oorl.pt

    python train.py                          # CPU preset without CUDA, GPU preset with it
    python train.py config/smoke.py          # both stages in a couple of minutes on 2 CPU cores
    python train.py --resume=True            # continue a killed run from out_dir/ckpt.pt
    python train.py --sft_ckpt=out/sft.pt --out_dir=out/rl_only   # OORL from an existing SFT model
    python train.py --init_from=DIR          # start from a local Hugging Face GPT-2 checkpoint
    torchrun --standalone --nproc_per_node=4 train.py   # data-parallel on 4 GPUs (ddp.py)

Every step prints a line and appends a JSON row to out_dir/metrics.jsonl. Batch sizes are global:
under torchrun each of the N ranks takes 1/N of every batch and the step is the one a single
process would take on the whole batch.
"""
import json
import math
import os
import random
import subprocess
import sys
import time

import torch

import ddp
import gepo
import reinforce
import reward
import sandbox
import tasks
import tokenizer
from configurator import configure, snapshot
from model import GPT, GPTConfig, device_setup, load_checkpoint, pack
from rollout import rollout

PROJECT_DIR = os.path.dirname(os.path.abspath(__file__))

# ----------------------------------------------------------------------------- configuration
# I/O
out_dir = "out"
data_dir = "data"        # prepare.py fills it when it is missing (this default directory only)
preset = "auto"          # "cpu" | "gpu" | "pretrained" | "auto": fills every key you do not set
resume = False           # continue from out_dir/ckpt.pt (its settings hold unless you change them)
sft_ckpt = ""            # start OORL from this finished SFT checkpoint (skips stage 1)
init_from = "scratch"    # "scratch", or a local Hugging Face GPT-2 directory (weights and tokenizer)
seed = 1337
device = "auto"          # "auto" (CUDA if there is one) | "cpu" | "cuda" | "cuda:1" ...
dtype = "auto"           # "auto" (bfloat16 autocast on CUDA, float32 on CPUs) | "bfloat16" | "float32"
compile = False          # torch.compile the training forward (worth it on a GPU for long runs)
allow_reduced_isolation = False  # run model-written code without bubblewrap (rlimits, user nobody)
ckpt_interval = 25       # steps between checkpoints (and always at the end of a stage)
# model
n_layer = 4
n_head = 4
n_embd = 128
block_size = 512
dropout = 0.0            # SFT only: OORL runs the model without dropout (pi_old must be one policy)
bias = False
# stage 1: SFT
sft_steps = 1500
sft_batch_size = 32
sft_lr = 2e-3
sft_ir_share = 0.15      # share of SFT batches made of C -> IR pairs
sft_warmup_frac = 0.03   # share of SFT steps spent warming the learning rate up
# stage 2: OORL
rl_steps = 14
prompts_per_step = 32    # B prompts per step ...
group_size = 8           # ... G completions each
max_new_tokens = 160
temperature = 0.8        # sampling temperature (eval.py's too); the loss scores pi_theta at the same one
top_k = None             # None, or sample among the top_k tokens only
top_p = None             # None, or nucleus sampling with this probability mass
ppo_epochs = 2           # gradient steps on each batch of rollouts (eq. 5's ratio is 1 on the first)
clip_eps = 0.2           # eq. 5
beta_kl = 0.01           # KL to the SFT model (eq. 1)
adv_estimator = "reinforce++"  # "reinforce++" (the paper's) | "grpo"
rl_lr = 3e-5             # small: Adam moves every weight by ~lr a step, whatever the gradient's size
rl_warmup_frac = 0.03    # share of OORL steps spent warming the learning rate up (paper: 3%)
weight_decay = 0.0       # paper: AdamW without weight decay
grad_clip = 1.0
w_rl = 1.0               # eq. 10
w_gepo = 0.01            # eq. 10 (paper: 0.01), applied once per RL step
pref_loss = "gepo"       # "gepo" | "dpo" | "none" (the ablation of the paper's Table 4)
gepo_beta = 0.1          # eq. 6's beta in the implicit reward
gepo_lam = 1.0           # eq. 9's weight of the winners' variance (paper: 1)
gepo_groups_per_step = 16  # IR groups a step: with 2, two batches' GEPO gradients are uncorrelated
                           # (cosine ~0) and the held-out margin did not move in 14 steps; with 16
                           # it rose (README, "What GEPO trains"). Not part of eq. 10: w_gepo stays 0.01
probe_interval = 5       # OORL steps between IR-equivalence probes on held-out groups (0: none)
probe_groups = 32        # held-out IR groups (data/ir_groups_val.jsonl) in each probe

PRESETS = {
    # 0.88M parameters: SFT ~10.5 min and OORL ~5 min on 2 idle CPU cores. Few large RL
    # steps: the gradient of 8 x 8 completions is mostly sampling noise (independent batches'
    # gradients have cosine ~0.04, see grad_cos) and Adam takes lr-sized steps in it, so 32 x 8
    # completions a step (~20 s, most of it compiling and running them), and a small rl_lr: from
    # this preset's SFT model 3e-5 gained 5.9 points of test pass@1 and 1e-4 lost 1.5 (README).
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=512, sft_steps=1500, sft_batch_size=32,
                rl_steps=14, prompts_per_step=32, group_size=8, rl_lr=3e-5, rl_warmup_frac=0.25),
    # 26.0M parameters at the project's ~750-token vocabulary (counted; 12 * 8 * 512^2 = 25.2M of
    # them in the blocks), for one GPU. sft_lr 1e-3: between nanoGPT's 6e-4 for 124M parameters and this project's 2e-3
    # for 0.9M (smaller models take larger steps); 4000 steps of 64 sequences is ~25 passes over
    # the 4000 training programs' translations, as the CPU preset's 1500 x 32 is ~12. OORL: 64 x 8
    # completions a step (a GPU samples them in seconds; compiling and running 512 programs takes
    # the machine's cores ~10-20 s), because larger batches are what made RL's gradient signal
    # rather than noise on the CPU; rl_lr 1e-5, a third of the CPU preset's, for a model 30 times
    # larger; 3% warm-up as in the paper.
    "gpu": dict(n_layer=8, n_head=8, n_embd=512, block_size=768, sft_steps=4000, sft_batch_size=64,
                sft_lr=1e-3, rl_steps=200, prompts_per_step=64, group_size=8, rl_lr=1e-5,
                rl_warmup_frac=0.03),
    # Fine-tuning a pretrained model (init_from=DIR): learning rates far below from-scratch ones
    # (its weights already encode language; large steps erase it), a short SFT that teaches the
    # prompt format (sft_steps=0 starts RL from the pretrained model itself), batches sized for
    # one GPU of ~24 GB with a ~100M-parameter GPT-2.
    "pretrained": dict(sft_steps=300, sft_batch_size=16, sft_lr=3e-5, sft_warmup_frac=0.1, rl_steps=100,
                       prompts_per_step=16, group_size=8, rl_lr=1e-6, rl_warmup_frac=0.03),
}
CONFIG_KEYS = list(snapshot(globals()))
was_set = configure(globals(), sys.argv[1:])

# A resumed run continues the saved run: its settings hold for every key not given again here.
ckpt_path = os.path.join(out_dir, "ckpt.pt")
state = None
if resume and os.path.exists(ckpt_path):
    try:
        state = load_checkpoint(ckpt_path)
    except ValueError as error:
        raise SystemExit(f"resume: {error}")
    for key, value in state["config"].items():
        if key in CONFIG_KEYS and key not in was_set and key != "resume":
            globals()[key] = value
elif resume:
    print(f"resume: no {ckpt_path} yet, starting afresh")

if preset == "auto":  # by the device the run will use, not by whether the machine has a GPU
    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    preset = "pretrained" if init_from != "scratch" else "gpu" if on_gpu else "cpu"
if preset not in PRESETS:
    raise SystemExit(f"unknown preset {preset!r}: choose one of {sorted(PRESETS)} or auto")
for key, value in PRESETS[preset].items():
    if key not in was_set and state is None:
        globals()[key] = value
config = {key: globals()[key] for key in CONFIG_KEYS}


def check(ok, key, allowed):
    if not ok:
        raise SystemExit(f"setting {key}={globals()[key]!r} is not allowed: {allowed}")


def validate_settings():
    """Every setting checked before any work: a bad value fails now, naming the key, not after
    the ten minutes of SFT that come before the first use of most of them."""
    def is_int(value):
        return isinstance(value, int) and not isinstance(value, bool)

    def is_number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    for key in ("n_layer", "n_head", "n_embd", "block_size", "sft_batch_size", "prompts_per_step", "group_size",
                "max_new_tokens", "ppo_epochs", "gepo_groups_per_step", "ckpt_interval", "probe_groups"):
        check(globals()[key] >= 1, key, "an integer >= 1")
    for key in ("sft_steps", "rl_steps", "probe_interval"):
        check(globals()[key] >= 0, key, "an integer >= 0")
    for key in ("sft_lr", "rl_lr", "temperature", "clip_eps", "grad_clip", "gepo_beta"):
        check(globals()[key] > 0, key, "a number > 0")
    for key in ("beta_kl", "weight_decay", "w_rl", "w_gepo", "gepo_lam"):
        check(globals()[key] >= 0, key, "a number >= 0")
    for key in ("sft_ir_share", "sft_warmup_frac", "rl_warmup_frac"):
        check(0 <= globals()[key] <= 1, key, "a share between 0 and 1")
    check(0 <= dropout < 1, "dropout", "0 <= dropout < 1")
    check(n_embd % n_head == 0, "n_embd", f"a multiple of n_head={n_head}")
    check(top_k is None or (is_int(top_k) and top_k >= 1), "top_k", "None or an integer >= 1")
    check(top_p is None or (is_number(top_p) and 0 < top_p <= 1), "top_p", "None or a number in (0, 1]")
    check(adv_estimator in ("reinforce++", "grpo"), "adv_estimator", "'reinforce++' or 'grpo'")
    check(adv_estimator != "grpo" or group_size >= 2, "group_size", "at least 2 with grpo (it compares a group)")
    check(pref_loss in ("gepo", "dpo", "none"), "pref_loss", "'gepo', 'dpo' or 'none'")
    check(dtype in ("auto", "bfloat16", "float32"), "dtype", "'auto', 'bfloat16' or 'float32'")
    check(init_from == "scratch" or os.path.isdir(init_from), "init_from",
          "'scratch' or a directory holding a Hugging Face GPT-2 checkpoint")
    check(not sft_ckpt or os.path.isfile(sft_ckpt), "sft_ckpt", "'' or the path of an existing sft.pt")
    try:
        torch.device(device if device != "auto" else "cpu")
    except RuntimeError:
        check(False, "device", "'auto', 'cpu', 'cuda' or 'cuda:N'")
    check(not device.startswith("cuda") or torch.cuda.is_available(), "device", "a CUDA device only where CUDA is")
    world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's ranks: every batch is split evenly
    for key in ("sft_batch_size", "prompts_per_step") + (("gepo_groups_per_step",) if pref_loss != "none" else ()):
        check(globals()[key] % world == 0, key, f"a multiple of the {world} torchrun ranks")


validate_settings()

# ----------------------------------------------------------------------------- set-up
device, autocast = device_setup(device, dtype)
rank, world_size, device = ddp.setup(device)
master = rank == 0  # rank 0 alone prints, logs and writes checkpoints
torch.manual_seed(seed)


def log(*args):
    if master:
        print(*args, flush=True)


log(f"preset: {preset} (settings you gave on the command line win over it); device {device}"
    + (f", {world_size} ranks" if world_size > 1 else ""))
if rl_steps > 0:  # model-written code runs in OORL: refuse now, not after SFT, if it cannot be isolated
    if allow_reduced_isolation:
        sandbox.allow_reduced_isolation()
    try:
        sandbox.check()
    except sandbox.Unavailable as error:
        raise SystemExit(str(error))
os.makedirs(out_dir, exist_ok=True)
if not os.path.exists(os.path.join(data_dir, "meta.json")):
    if data_dir != "data":  # a typo'd path must not silently become a new 70 MB dataset
        raise SystemExit(f"no data in {data_dir}/: check --data_dir, or make it with "
                         f"`python {os.path.join(PROJECT_DIR, 'prepare.py')} --data_dir={data_dir}`")
    if master:
        print(f"no data in {os.path.abspath(data_dir)}/: running prepare.py to make it (a few minutes)")
        subprocess.run([sys.executable, os.path.join(PROJECT_DIR, "prepare.py"), f"--data_dir={data_dir}"], check=True)
    ddp.barrier()
try:
    tok = tokenizer.load(data_dir, init_from)
except (ValueError, FileNotFoundError) as error:
    raise SystemExit(str(error))
eot = tok.eot


def read_jsonl(name):
    with open(os.path.join(data_dir, name)) as f:
        return [json.loads(line) for line in f]


def read_checkpoint(path):
    """A checkpoint of this run's tokenizer: anything else would read token ids that mean
    other text."""
    try:
        checkpoint = load_checkpoint(path)
    except ValueError as error:
        raise SystemExit(str(error))
    if checkpoint.get("tokenizer") != tok.record():
        raise SystemExit(f"{path} was trained with another tokenizer than this run's "
                         f"(data_dir={data_dir}, init_from={init_from}): pass the settings it was trained with")
    return checkpoint


def check_resumed_run(saved):
    """Refuse to resume into a different run: another model shape, data, tokenizer or number of
    ranks would silently change what the checkpoint means. Other changes are allowed, and said."""
    fixed = ("n_layer", "n_head", "n_embd", "block_size", "bias", "dropout", "init_from", "data_dir", "sft_ckpt")
    differ = [k for k in fixed if saved["config"].get(k) != config[k]]
    if differ:
        raise SystemExit("resume: these settings differ from the saved run's and would change the model or its "
                         "data: " + ", ".join(f"{k} (saved {saved['config'].get(k)!r}, now {config[k]!r})"
                                              for k in differ) + "; start a new out_dir instead")
    if saved["world_size"] != world_size:
        raise SystemExit(f"resume: the saved run had {saved['world_size']} ranks, this one {world_size}: "
                         f"resume with the same torchrun --nproc_per_node")
    if saved["tokenizer"] != tok.record():
        raise SystemExit("resume: the tokenizer differs from the saved run's (was data/ regenerated?)")
    changed = [k for k in CONFIG_KEYS if k != "resume" and saved["config"].get(k) != config[k]]
    if changed:
        log("resume: changed settings: " + ", ".join(f"{k}={config[k]!r}" for k in changed))


def save_checkpoint(path, **contents):
    """Atomic (a crash while writing leaves the previous checkpoint intact); tensors and plain
    data only, so that loading it runs no code (torch.load with weights_only=True)."""
    if master:
        contents.update(config=config, tokenizer=tok.record(), world_size=world_size)
        torch.save(contents, path + ".tmp")
        os.replace(path + ".tmp", path)


def trim_metrics(stage, step):
    """Rows logged after the checkpoint a run resumes from are replayed: drop them first."""
    path = os.path.join(out_dir, "metrics.jsonl")
    if not (master and os.path.exists(path)):
        return
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    keep = [r for r in rows if (r["stage"] == "sft" and (stage == "oorl" or r["step"] < step))
            or (stage == "oorl" and r["stage"] == "oorl" and r["step"] < step)]
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in keep)
    os.replace(path + ".tmp", path)


def learning_rate(step, total, base_lr, warmup_frac):
    """Linear warm-up over warmup_frac of the steps, then cosine decay to a tenth."""
    warmup = max(1, int(warmup_frac * total))
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def set_learning_rate(optimizer, step, total, base_lr, warmup_frac):
    lr = learning_rate(step, total, base_lr, warmup_frac)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def log_metrics(row):
    if master:
        with open(os.path.join(out_dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")


def progress(stage, step, total, t_start, start):
    done = step + 1
    eta = (time.time() - t_start) / (done - start) * (total - done)
    return f"{stage} {done}/{total} | eta {eta / 60:.1f} min"


def new_model():
    if init_from == "scratch":
        return GPT(GPTConfig(block_size=block_size, vocab_size=tok.n_vocab, n_layer=n_layer,
                             n_head=n_head, n_embd=n_embd, dropout=dropout, bias=bias))
    try:
        gpt = GPT.from_pretrained(init_from)
    except ValueError as error:
        raise SystemExit(str(error))
    if gpt.config.vocab_size != tok.n_vocab:  # a sampled id must be one the tokenizer can decode
        raise SystemExit(f"{init_from}: its model has {gpt.config.vocab_size} token embeddings but its "
                         f"tokenizer {tok.n_vocab} tokens")
    return gpt


def sum_gradients_and_clip(model):
    """Each rank's loss is its share of the global batch's loss: summing the gradients over the
    ranks gives the whole batch's gradient, then every rank clips and steps alike (ddp.py)."""
    ddp.sum_gradients(model.parameters())
    return torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)


train_tasks = read_jsonl("tasks_train.jsonl")
ir_groups = read_jsonl("ir_groups.jsonl")
if state is not None:
    check_resumed_run(state)
    trim_metrics(state["stage"], state["step"])

# ----------------------------------------------------------------------------- stage 1: SFT
def sft_datasets(model_block_size):
    """(prompt, completion) token lists of the translation pairs and of the C -> IR pairs that
    fit in the model's block; built only when SFT runs (a resumed OORL run or --sft_ckpt skips it)."""
    translations = [(tok.encode(t["prompt"]), tok.encode(t["reference"]) + [eot]) for t in train_tasks]
    irs = [(tok.encode(g["prompt"]), tok.encode(ir) + [eot]) for g in ir_groups for ir in g["winners"]]
    return ([e for e in translations if len(e[0]) + len(e[1]) <= model_block_size],
            [e for e in irs if len(e[0]) + len(e[1]) <= model_block_size])


def sft_batch(rng, sft_examples, ir_examples):
    """This rank's share of a global batch, as right-padded inputs and targets (-1 where there
    is nothing to predict: prompt and padding). A batch is all C -> IR (with probability
    sft_ir_share) or all translations: an IR example is about twice as long as a translation,
    and a mixed batch would pad every translation to its length. Every rank draws the same
    global batch from the same generator and keeps its own share, so N ranks train on exactly
    the batches of one process."""
    pool = ir_examples if ir_examples and rng.random() < sft_ir_share else sft_examples
    batch = ddp.shard([rng.choice(pool) for _ in range(sft_batch_size)])
    idx, targets, mask = pack([p for p, _ in batch], [c for _, c in batch], pad_id=eot)
    return idx.to(device), targets.masked_fill(~mask, -1).to(device)


def run_sft(model, state):
    sft_examples, ir_examples = sft_datasets(model.config.block_size)
    optimizer = model.configure_optimizers(0.1, sft_lr, (0.9, 0.95), device)
    forward = torch.compile(model) if compile else model
    start, rng = 0, random.Random(seed)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        rng.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"][rank])
    log(f"SFT: {len(sft_examples)} translation and {len(ir_examples)} C -> IR examples, "
        f"{model.get_num_params() / 1e6:.2f}M parameters")
    t_start = time.time()
    model.train()
    for step in range(start, sft_steps):
        t0 = time.time()
        lr = set_learning_rate(optimizer, step, sft_steps, sft_lr, sft_warmup_frac)
        idx, targets = sft_batch(rng, sft_examples, ir_examples)
        local_tokens = (targets >= 0).sum()
        tokens = ddp.all_sum(local_tokens.clone())
        with autocast:
            _, loss = forward(idx, targets=targets)
        # the mean over this rank's tokens, rescaled to its share of the mean over all ranks' tokens
        loss = loss * local_tokens / tokens.clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sum_gradients_and_clip(model)
        optimizer.step()
        loss_value = ddp.all_sum(loss.detach().float()).item()
        dt = time.time() - t0
        if step % 10 == 0 or step == sft_steps - 1:
            row = dict(step=step, stage="sft", loss=loss_value, lr=lr, tokens_per_s=tokens.item() / dt)
            mfu = (model.estimate_mfu(tokens.item() / world_size, dt, seq_len=idx.size(1))
                   if torch.device(device).type == "cuda" else None)  # None for a GPU of unknown peak
            if mfu is not None:
                row["mfu"] = mfu
            log(f"sft step {step} | loss {loss_value:.4f} | lr {lr:.2e} | {row['tokens_per_s']:.0f} tok/s"
                + (f" | mfu {100 * row['mfu']:.1f}%" if "mfu" in row else "")
                + f" | {progress('sft', step, sft_steps, t_start, start)}")
            log_metrics(row)
        if (step + 1) % ckpt_interval == 0 or step == sft_steps - 1:
            torch_rng = ddp.gather(torch.get_rng_state())
            save_checkpoint(ckpt_path, stage="sft", step=step + 1, model=model.state_dict(),
                            model_args=vars(model.config), optimizer=optimizer.state_dict(), python_rng=rng.getstate(), torch_rng=torch_rng)
    save_checkpoint(os.path.join(out_dir, "sft.pt"), model=model.state_dict(), model_args=vars(model.config),
                    stage="sft")


# ----------------------------------------------------------------------------- stage 2: OORL
def encode_groups(groups, model_block_size):
    """IR groups as token ids (each response ends with end-of-text, so its probability of
    stopping counts), those that fit in the model's block."""
    encoded = [dict(prompt_ids=tok.encode(g["prompt"]), winner_ids=[tok.encode(w) + [eot] for w in g["winners"]],
                    loser_ids=[tok.encode(l) + [eot] for l in g["losers"]]) for g in groups]
    return [g for g in encoded if len(g["prompt_ids"]) + max(map(len, g["winner_ids"] + g["loser_ids"]))
            <= model_block_size]


def rl_prompts(model_block_size):
    """(task, prompt ids) of the RL split whose prompt leaves room for max_new_tokens in the
    model's block; held-out targets never appear here, nor targets without a toolchain: their
    programs could only score 0, and REINFORCE++'s global baseline would push the policy away
    from the language."""
    missing = [lang for lang in tasks.RL_TARGETS if not reward.available(lang)]
    if missing:
        log(f"OORL: no toolchain for {', '.join(missing)}: these targets are left out of the RL prompts")
    chosen = [(t, tok.encode(t["prompt"])) for t in train_tasks
              if t["src_lang"] in tasks.SOURCE_LANGS and t["tgt_lang"] in tasks.RL_TARGETS
              and t["tgt_lang"] not in missing]
    return [(t, ids) for t, ids in chosen if len(ids) + max_new_tokens <= model_block_size]


def preference_loss(policy, groups, ref_chosen, ref_rejected):
    """GEPO (eqs. 6-9) over whole groups, or DPO on the single pairs: this rank's share of the
    mean over the global batch of groups."""
    chosen, rejected, chosen_mask, rejected_mask = gepo.group_logps(policy, groups, device)
    args = (chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask)
    if pref_loss == "dpo":
        loss = gepo.dpo_loss(chosen[:, 0], rejected[:, 0], ref_chosen[:, 0], ref_rejected[:, 0], beta=gepo_beta)
    else:
        loss = gepo.gepo_loss(*args, beta=gepo_beta, lam=gepo_lam)
    return loss * len(groups) / gepo_groups_per_step, gepo.gepo_metrics(*args, beta=gepo_beta)


def run_oorl(model, reference, state, rl_tasks, gepo_groups, probe_set):
    optimizer = model.configure_optimizers(weight_decay, rl_lr, (0.9, 0.95), device)
    policy_logprobs = torch.compile(model.token_logprobs) if compile else model.token_logprobs
    start, rng = 0, random.Random(seed + 1)  # the same on every rank: the global batch's draws
    generator = torch.Generator(device=device).manual_seed(seed + 1 + rank)  # each rank's own samples
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        rng.setstate(state["python_rng"])
        generator.set_state(state["generator"][rank])
    log(f"OORL: {len(rl_tasks)} RL prompts, {len(gepo_groups)} IR groups, pref_loss={pref_loss}, "
        f"adv_estimator={adv_estimator}")
    # OORL runs the model without dropout: pi_old, pi_theta and pi_ref must each be one policy
    model.eval()
    t_start = time.time()
    previous_grad = None
    for step in range(start, rl_steps):
        lr = set_learning_rate(optimizer, step, rl_steps, rl_lr, rl_warmup_frac)
        # rollout: B prompts x G completions with the KV cache (this rank's share of the prompts)
        t0 = time.time()
        batch, prompt_ids = zip(*ddp.shard(rng.sample(rl_tasks, prompts_per_step)))
        with autocast:
            out = rollout(model, list(prompt_ids), group_size, max_new_tokens, eot,
                          temperature, top_k, top_p, generator)
        completions = [tok.decode(out.completion_ids(r)) for r in range(len(out.completions))]
        row_tasks = [t for t in batch for _ in range(group_size)]
        t1 = time.time()
        # reward (eq. 4): compile and run every completion's unit tests; cut-off ones get 0
        verdicts = reward.score_details(completions, row_tasks, truncated=out.truncated.tolist())
        rewards = torch.tensor([v.reward for v in verdicts], device=device)
        t2 = time.time()
        idx, targets, mask = out.sequences(pad_id=eot)
        with torch.no_grad(), autocast:
            logp_ref = reference.token_logprobs(idx, targets, temperature).float()
        # this rank's share of a global batch of IR groups (one pair of each for DPO)
        groups = (ddp.shard(gepo.sample_groups(gepo_groups, gepo_groups_per_step, rng, pairs=pref_loss == "dpo"))
                  if pref_loss != "none" else [])
        if groups:
            with torch.no_grad(), autocast:
                ref_chosen, ref_rejected, _, _ = gepo.group_logps(reference, groups, device)
        loss_pref, pref_stats = torch.zeros(()), {}
        for epoch in range(ppo_epochs):
            with autocast:
                logp = policy_logprobs(idx, targets, temperature).float()
            if epoch == 0:
                # pi_old is what this training forward computes before any update: the rollout's
                # own log-probs come from a KV-cached decode (in bf16 under autocast), another
                # computation, and would start the ratio of eq. 5 and the KL away from 1 and 0.
                logp_old = logp.detach()
                if adv_estimator == "reinforce++":
                    advantages, _ = reinforce.reinforce_pp_advantages(rewards, logp_old, logp_ref, mask, beta_kl)
                else:
                    advantages = reinforce.grpo_advantages(rewards, group_size, mask)
            loss_onp, onp_stats = reinforce.policy_loss(logp, logp_old, advantages, mask, clip_eps)
            loss = w_rl * loss_onp
            if adv_estimator == "grpo":  # GRPO puts the KL in the loss (k3 estimator)
                loss = loss + beta_kl * reinforce.masked_mean(reinforce.kl_k3(logp, logp_ref, mask), mask)
            if epoch == 0 and groups:
                # eq. 10's w_gepo weighs the preference loss once per RL step: GEPO's data are a
                # static, off-policy set, and adding it in every PPO epoch would weigh it
                # ppo_epochs times
                with autocast:
                    loss_pref, pref_stats = preference_loss(model, groups, ref_chosen, ref_rejected)
                loss = loss + w_gepo * loss_pref
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = sum_gradients_and_clip(model)
            if epoch == 0:
                # Signal vs noise: two batches of different prompts share only the expected
                # gradient, so the cosine of successive steps' gradients is near 0 when a batch's
                # gradient is mostly sampling noise (Adam then takes lr-sized steps in noise).
                grad = torch.cat([p.grad.flatten() for p in model.parameters()])
                grad_cos = (torch.nn.functional.cosine_similarity(grad, previous_grad, dim=0).item()
                            if previous_grad is not None else None)
                grad_norm, previous_grad = norm.item(), grad
            optimizer.step()
        t3 = time.time()

        # logging, over every rank's completions: eq. 1's KL as the mean of log pi_old - log
        # pi_ref over completion tokens
        kl = reinforce.global_masked_mean(logp_old - logp_ref, mask).item()
        n_tokens = ddp.all_sum_float(mask.sum())
        by_lang = {}
        for part in ddp.gather([(t["tgt_lang"], v.reward) for t, v in zip(row_tasks, verdicts)]):
            for lang, value in part:
                by_lang.setdefault(lang, []).append(value)
        all_rewards = [value for values in by_lang.values() for value in values]
        row = dict(step=step, stage="oorl", reward=sum(all_rewards) / len(all_rewards), kl=kl,
                   loss_onp=ddp.all_sum_float(loss_onp.item()),
                   loss_gepo=ddp.all_sum_float(loss_pref.item()), lr=lr,
                   pass_rate={lang: sum(r) / len(r) for lang, r in sorted(by_lang.items())},
                   entropy=reinforce.global_masked_mean(out.entropy, out.mask).item(),
                   clip_frac=onp_stats["clip_frac"],
                   zero_adv_share=ddp.all_sum_float(reinforce.zero_advantage_share(rewards, group_size)) / world_size,
                   truncated=ddp.all_sum_float(out.truncated.sum()) / (prompts_per_step * group_size),
                   gepo_margin=ddp.all_sum_float(pref_stats.get("margin", 0.0)) / world_size,
                   gepo_winner_var=ddp.all_sum_float(pref_stats.get("winner_var", 0.0)) / world_size,
                   grad_norm=grad_norm, grad_cos=grad_cos,
                   time_rollout=t1 - t0, time_reward=t2 - t1, time_update=t3 - t2,
                   rollout_tok_per_s=n_tokens / (t1 - t0))
        if probe_set and probe_interval and (step % probe_interval == 0 or step == rl_steps - 1):
            # what GEPO trains, measured on IR groups it never sees: the margin of eq. 6's
            # implicit rewards (winners minus losers) against the SFT reference
            with autocast:
                probe = gepo.probe(model, reference, probe_set, beta=gepo_beta)
            row.update(probe_margin=probe["margin"], probe_positive_share=probe["positive_share"])
        log_metrics(row)
        langs = " ".join(f"{lang} {r:.2f}" for lang, r in row["pass_rate"].items())
        probe_text = f" probe {row['probe_margin']:+.3f}" if "probe_margin" in row else ""
        log(f"oorl step {step} | reward {row['reward']:.3f} | kl {kl:.4f} | entropy {row['entropy']:.3f} | "
            f"clip {row['clip_frac']:.3f} | gepo {row['loss_gepo']:.4f} margin {row['gepo_margin']:.3f}{probe_text} | "
            f"zero-adv {row['zero_adv_share']:.2f} | grad cos {'-' if grad_cos is None else f'{grad_cos:.3f}'} | "
            f"{langs} | time rollout {t1 - t0:.1f}s reward "
            f"{t2 - t1:.1f}s update {t3 - t2:.1f}s | {progress('oorl', step, rl_steps, t_start, start)}")
        if (step + 1) % ckpt_interval == 0 or step == rl_steps - 1:
            generators = ddp.gather(generator.get_state())
            save_checkpoint(ckpt_path, stage="oorl", step=step + 1, model=model.state_dict(),
                            model_args=vars(model.config), optimizer=optimizer.state_dict(), python_rng=rng.getstate(), generator=generators)
    save_checkpoint(os.path.join(out_dir, "oorl.pt"), model=model.state_dict(), model_args=vars(model.config),
                    stage="oorl")


# ----------------------------------------------------------------------------- main
# This rank's share of the machine's cores for compiling and running programs
reward.share_cores(ddp.local_world_size())
sft_path = sft_ckpt or os.path.join(out_dir, "sft.pt")
run_sft_stage = not sft_ckpt and not (state is not None and state["stage"] == "oorl")
if run_sft_stage:
    model = new_model().to(device)
    ddp.broadcast_parameters(model)
    policy_block_size = model.config.block_size
else:
    sft = read_checkpoint(sft_path)
    policy_block_size = sft["model_args"]["block_size"]
# prompts and IR groups are filtered with the block size of the model that will read them, and
# checked against the settings now, before SFT
rl_tasks = rl_prompts(policy_block_size) if rl_steps > 0 else []
gepo_groups = encode_groups(ir_groups, policy_block_size) if rl_steps > 0 and pref_loss != "none" else []
probe_set = (encode_groups(read_jsonl("ir_groups_val.jsonl"), policy_block_size)[:probe_groups]
             if rl_steps > 0 and probe_interval and os.path.exists(os.path.join(data_dir, "ir_groups_val.jsonl"))
             else [])
if rl_steps > 0 and len(rl_tasks) < prompts_per_step:
    raise SystemExit(f"setting prompts_per_step={prompts_per_step} is not allowed: the RL split has "
                     f"{len(rl_tasks)} prompts that leave room for max_new_tokens={max_new_tokens} in the "
                     f"model's block of {policy_block_size} tokens")
if rl_steps > 0 and pref_loss != "none" and len(gepo_groups) < gepo_groups_per_step:
    raise SystemExit(f"setting gepo_groups_per_step={gepo_groups_per_step} is not allowed: "
                     f"{len(gepo_groups)} IR groups fit the model's block of {policy_block_size} tokens")
if run_sft_stage:
    if state is not None:
        log(f"resume: SFT from step {state['step']}")
        model.load_state_dict(state["model"])
    run_sft(model, state)
    state = None
    ddp.barrier()  # rank 0 has written sft.pt
    sft = read_checkpoint(sft_path)
# pi_ref is the SFT model, frozen; pi_theta starts from it (or from the resumed checkpoint)
reference = GPT.from_checkpoint(sft, device).eval().requires_grad_(False)
model = GPT.from_checkpoint(sft, device)
if state is not None:
    log(f"resume: OORL from step {state['step']}")
    model.load_state_dict(state["model"])
if rl_steps > 0:
    run_oorl(model, reference, state, rl_tasks, gepo_groups, probe_set)
log(f"done: checkpoints in {out_dir}/")
ddp.teardown()
