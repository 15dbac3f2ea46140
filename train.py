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

Every step prints a line and appends a JSON row to out_dir/metrics.jsonl.
"""
import copy
import json
import math
import os
import random
import subprocess
import sys
import time
from contextlib import nullcontext

import torch

import gepo
import reinforce
import reward
import tasks
from configurator import configure
from model import GPT, GPTConfig
from rollout import rollout

# ----------------------------------------------------------------------------- configuration
# I/O
out_dir = "out"
data_dir = "data"
preset = "auto"          # "cpu" | "gpu" | "auto" (cpu without CUDA): fills every key you do not set
resume = False           # continue from out_dir/ckpt.pt
sft_ckpt = ""            # start OORL from this finished SFT checkpoint (skips stage 1)
init_from = "scratch"    # "scratch", or a Hugging Face GPT-2 directory for GPT.from_pretrained
seed = 1337
device = "auto"          # "cpu" | "cuda" | "auto"
ckpt_interval = 25       # steps between checkpoints (and always at the end of a stage)
# model
n_layer = 4
n_head = 4
n_embd = 128
block_size = 512
dropout = 0.0
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
top_k = None
top_p = None
ppo_epochs = 2           # gradient steps on each batch of rollouts (eq. 5's ratio is 1 on the first)
clip_eps = 0.2           # eq. 5
beta_kl = 0.01           # KL to the SFT model (eq. 1)
adv_estimator = "reinforce++"  # "reinforce++" (the paper's) | "grpo"
rl_lr = 3e-5             # small: Adam moves every weight by ~lr a step, whatever the gradient's size
rl_warmup_frac = 0.03    # share of OORL steps spent warming the learning rate up (paper: 3%)
weight_decay = 0.0       # paper: AdamW without weight decay
grad_clip = 1.0
w_rl = 1.0               # eq. 10
w_gepo = 0.01            # eq. 10 (paper: 0.01)
pref_loss = "gepo"       # "gepo" | "dpo" | "none" (the ablation of the paper's Table 4)
gepo_beta = 0.1          # eq. 6's beta in the implicit reward
gepo_lam = 1.0           # eq. 9's weight of the winners' variance (paper: 1)
gepo_groups_per_step = 2

PRESETS = {
    # about 0.88M parameters: SFT ~10.5 min and OORL ~5 min on 2 idle CPU cores. Few large RL
    # steps: the gradient of 8 x 8 completions is mostly sampling noise (independent batches'
    # gradients have cosine ~0.04, see grad_cos) and Adam takes lr-sized steps in it, so 32 x 8
    # completions a step (~20 s, most of it compiling and running them), and a small rl_lr: from
    # this preset's SFT model 3e-5 gained 5.9 points of test pass@1 and 1e-4 lost 1.5 (README).
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=512, sft_steps=1500, sft_batch_size=32,
                rl_steps=14, prompts_per_step=32, group_size=8, rl_lr=3e-5, rl_warmup_frac=0.25),
    # about 30M parameters for one GPU
    "gpu": dict(n_layer=8, n_head=8, n_embd=512, block_size=768, sft_steps=4000, sft_batch_size=64,
                sft_lr=1e-3, rl_steps=300, prompts_per_step=32, group_size=8),
}
was_set = configure(globals(), sys.argv[1:])
if preset == "auto":
    preset = "gpu" if torch.cuda.is_available() else "cpu"
if preset not in PRESETS:
    raise SystemExit(f"unknown preset {preset!r}: choose one of {sorted(PRESETS)} or auto")
print(f"preset: {preset} (settings you gave on the command line win over it)")
for key, value in PRESETS[preset].items():
    if key not in was_set:
        globals()[key] = value
if adv_estimator not in ("reinforce++", "grpo"):
    raise SystemExit(f"adv_estimator must be 'reinforce++' or 'grpo', not {adv_estimator!r}")
if pref_loss not in ("gepo", "dpo", "none"):
    raise SystemExit(f"pref_loss must be 'gepo', 'dpo' or 'none', not {pref_loss!r}")
config = {k: v for k, v in globals().items() if not k.startswith("_") and k != "PRESETS"
          and isinstance(v, (int, float, bool, str, tuple, type(None)))}

# ----------------------------------------------------------------------------- set-up
if device == "auto":
    device = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(seed)
random.seed(seed)
autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else nullcontext()
os.makedirs(out_dir, exist_ok=True)
if not os.path.exists(os.path.join(data_dir, "meta.json")):
    print(f"no data in {data_dir}/: running prepare.py first")
    subprocess.run([sys.executable, "prepare.py", f"--data_dir={data_dir}"], check=True)
enc = tasks.load_tokenizer(data_dir)
eot = enc.eot_token


def read_jsonl(name):
    with open(os.path.join(data_dir, name)) as f:
        return [json.loads(line) for line in f]


def encode(text):
    return enc.encode(text, allowed_special="all")


def save_checkpoint(path, **state):
    """Atomic: a crash while writing leaves the previous checkpoint intact."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


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
    with open(os.path.join(out_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


def progress(stage, step, total, t_start):
    done = step + 1
    eta = (time.time() - t_start) / done * (total - done)
    return f"{stage} {done}/{total} | eta {eta / 60:.1f} min"


def new_model():
    if init_from == "scratch":
        return GPT(GPTConfig(block_size=block_size, vocab_size=enc.n_vocab, n_layer=n_layer,
                             n_head=n_head, n_embd=n_embd, dropout=dropout, bias=bias))
    gpt = GPT.from_pretrained(init_from)
    if gpt.config.vocab_size < enc.n_vocab:
        raise SystemExit(f"{init_from}: its vocabulary ({gpt.config.vocab_size}) is smaller than this "
                         f"project's tokenizer ({enc.n_vocab})")
    return gpt


def load_model(checkpoint):
    gpt = GPT(GPTConfig(**checkpoint["model_args"])).to(device)
    gpt.load_state_dict(checkpoint["model"])
    return gpt


train_tasks = read_jsonl("tasks_train.jsonl")
ir_groups = read_jsonl("ir_groups.jsonl")
ckpt_path = os.path.join(out_dir, "ckpt.pt")
state = torch.load(ckpt_path, map_location=device, weights_only=False) if resume and os.path.exists(ckpt_path) else None
if resume and state is None:
    print(f"resume: no {ckpt_path} yet, starting afresh")

# ----------------------------------------------------------------------------- stage 1: SFT
def sft_datasets():
    """(prompt, completion) token lists of the translation pairs and of the C -> IR pairs that
    fit in block_size; built only when SFT runs (a resumed OORL run or --sft_ckpt skips it)."""
    translations = [(encode(t["prompt"]), encode(t["reference"]) + [eot]) for t in train_tasks]
    irs = [(encode(g["prompt"]), encode(ir) + [eot]) for g in ir_groups for ir in g["winners"]]
    return ([e for e in translations if len(e[0]) + len(e[1]) <= block_size],
            [e for e in irs if len(e[0]) + len(e[1]) <= block_size])


def sft_batch(rng, sft_examples, ir_examples):
    """Right-padded inputs and targets; prompt and padding targets are -1 (ignored). A batch is
    all C -> IR (with probability sft_ir_share) or all translations: an IR example is about twice
    as long as a translation, and a mixed batch would pad every translation to its length."""
    pool = ir_examples if ir_examples and rng.random() < sft_ir_share else sft_examples
    batch = [rng.choice(pool) for _ in range(sft_batch_size)]
    width = max(len(p) + len(c) for p, c in batch) - 1
    idx = torch.full((len(batch), width), eot, dtype=torch.long)
    targets = torch.full((len(batch), width), -1, dtype=torch.long)
    for b, (p, c) in enumerate(batch):
        seq = torch.tensor(p + c)
        idx[b, :len(seq) - 1] = seq[:-1]
        targets[b, len(p) - 1:len(seq) - 1] = seq[len(p):]
    return idx.to(device), targets.to(device)


def run_sft(model, state):
    sft_examples, ir_examples = sft_datasets()
    optimizer = model.configure_optimizers(0.1, sft_lr, (0.9, 0.95), device)
    start, rng = 0, random.Random(seed)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        start, rng = state["step"], state["python_rng"]
        torch.set_rng_state(state["torch_rng"])
    print(f"SFT: {len(sft_examples)} translation and {len(ir_examples)} C -> IR examples, "
          f"{model.get_num_params() / 1e6:.2f}M parameters")
    t_start = time.time()
    for step in range(start, sft_steps):
        t0 = time.time()
        lr = set_learning_rate(optimizer, step, sft_steps, sft_lr, sft_warmup_frac)
        idx, targets = sft_batch(rng, sft_examples, ir_examples)
        with autocast:
            _, loss = model(idx, targets=targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        tokens = int((targets >= 0).sum())
        dt = time.time() - t0
        if step % 10 == 0 or step == sft_steps - 1:
            print(f"sft step {step} | loss {loss.item():.4f} | lr {lr:.2e} | {tokens / dt:.0f} tok/s | "
                  f"{progress('sft', step, sft_steps, t_start)}")
            log_metrics(dict(step=step, stage="sft", loss=loss.item(), lr=lr, tokens_per_s=tokens / dt))
        if (step + 1) % ckpt_interval == 0 or step == sft_steps - 1:
            save_checkpoint(ckpt_path, stage="sft", step=step + 1, model=model.state_dict(),
                            optimizer=optimizer.state_dict(), config=config, python_rng=rng,
                            torch_rng=torch.get_rng_state())
    save_checkpoint(os.path.join(out_dir, "sft.pt"), model=model.state_dict(), model_args=model.config.__dict__,
                    config=config, stage="sft")


# ----------------------------------------------------------------------------- stage 2: OORL
# (task, prompt ids) of the RL split, each prompt encoded once; held-out targets never appear here
rl_tasks = [(t, encode(t["prompt"])) for t in train_tasks
            if t["src_lang"] in tasks.SOURCE_LANGS and t["tgt_lang"] in tasks.RL_TARGETS]
rl_tasks = [(t, ids) for t, ids in rl_tasks if len(ids) + max_new_tokens <= block_size]
gepo_groups = [dict(prompt_ids=encode(g["prompt"]), winner_ids=[encode(w) + [eot] for w in g["winners"]],
                    loser_ids=[encode(l) + [eot] for l in g["losers"]]) for g in ir_groups]
gepo_groups = [g for g in gepo_groups
               if len(g["prompt_ids"]) + max(map(len, g["winner_ids"] + g["loser_ids"])) <= block_size]


def preference_groups(rng):
    """A batch of IR groups; the ablation row "+DPO" keeps one (winner, loser) pair of each."""
    groups = rng.sample(gepo_groups, min(gepo_groups_per_step, len(gepo_groups)))
    if pref_loss == "dpo":
        groups = [dict(g, winner_ids=g["winner_ids"][:1], loser_ids=g["loser_ids"][:1]) for g in groups]
    return groups


def preference_loss(policy, groups, ref_chosen, ref_rejected):
    """GEPO (eqs. 6-9) over whole groups, or DPO on the single pairs."""
    chosen, rejected, chosen_mask, rejected_mask = gepo.group_logps(policy, groups, device)
    args = (chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask)
    if pref_loss == "dpo":
        loss = gepo.dpo_loss(chosen[:, 0], rejected[:, 0], ref_chosen[:, 0], ref_rejected[:, 0], beta=gepo_beta)
    else:
        loss = gepo.gepo_loss(*args, beta=gepo_beta, lam=gepo_lam)
    return loss, gepo.gepo_metrics(*args, beta=gepo_beta)


def run_oorl(model, reference, state):
    optimizer = model.configure_optimizers(weight_decay, rl_lr, (0.9, 0.95), device)
    start, rng = 0, random.Random(seed + 1)
    generator = torch.Generator(device=device).manual_seed(seed + 1)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        start, rng = state["step"], state["python_rng"]
        generator.set_state(state["generator"])
    print(f"OORL: {len(rl_tasks)} RL prompts, {len(gepo_groups)} IR groups, pref_loss={pref_loss}, "
          f"adv_estimator={adv_estimator}")
    t_start = time.time()
    previous_grad = None
    for step in range(start, rl_steps):
        lr = set_learning_rate(optimizer, step, rl_steps, rl_lr, rl_warmup_frac)
        # rollout: B prompts x G completions with the KV cache
        t0 = time.time()
        batch, prompt_ids = zip(*rng.sample(rl_tasks, prompts_per_step))
        model.eval()
        with autocast:
            out = rollout(model, list(prompt_ids), group_size, max_new_tokens, eot,
                          temperature, top_k, top_p, generator)
        completions = [enc.decode(out.completion_ids(r)) for r in range(len(out.completions))]
        row_tasks = [t for t in batch for _ in range(group_size)]
        t1 = time.time()
        # reward (eq. 4): compile and run every completion's unit tests; cut-off ones get 0
        verdicts = reward.score_details(completions, row_tasks, truncated=out.truncated.tolist())
        rewards = torch.tensor([v.reward for v in verdicts], device=device)
        t2 = time.time()
        # advantages; pi_old are the sampling log-probs, pi_ref the frozen SFT model's
        idx, targets, mask = out.sequences(pad_id=eot)
        logp_old = torch.zeros(mask.shape, device=device)
        logp_old[mask] = out.logprobs[out.mask]
        with torch.no_grad(), autocast:
            logp_ref = reference.token_logprobs(idx, targets, temperature).float()
        if adv_estimator == "reinforce++":
            advantages, _ = reinforce.reinforce_pp_advantages(rewards, logp_old, logp_ref, mask, beta_kl)
        else:
            advantages = reinforce.grpo_advantages(rewards, group_size, mask)
        groups = preference_groups(rng) if pref_loss != "none" else []
        if groups:
            with torch.no_grad(), autocast:
                ref_chosen, ref_rejected, _, _ = gepo.group_logps(reference, groups, device)
        model.train()
        for epoch in range(ppo_epochs):
            with autocast:
                logp = model.token_logprobs(idx, targets, temperature).float()
                loss_onp, onp_stats = reinforce.policy_loss(logp, logp_old, advantages, mask, clip_eps)
                loss = w_rl * loss_onp
                if adv_estimator == "grpo":  # GRPO puts the KL in the loss (k3 estimator)
                    loss = loss + beta_kl * reinforce.masked_mean(reinforce.kl_k3(logp, logp_ref, mask), mask)
                loss_pref, pref_stats = (preference_loss(model, groups, ref_chosen, ref_rejected) if groups
                                         else (torch.zeros(()), {}))
                loss = loss + w_gepo * loss_pref
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
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

        # logging: eq. 1's KL as the mean of log pi_old - log pi_ref over completion tokens
        kl = ((logp_old - logp_ref)[mask]).mean().item()
        n_tokens = int(mask.sum())
        by_lang = {}
        for t, v in zip(row_tasks, verdicts):
            by_lang.setdefault(t["tgt_lang"], []).append(v.reward)
        row = dict(step=step, stage="oorl", reward=rewards.mean().item(), kl=kl,
                   loss_onp=loss_onp.item(), loss_gepo=loss_pref.item(), lr=lr,
                   pass_rate={lang: sum(r) / len(r) for lang, r in sorted(by_lang.items())},
                   entropy=out.entropy[out.mask].mean().item(), clip_frac=onp_stats["clip_frac"],
                   zero_adv_share=reinforce.zero_advantage_share(rewards, group_size),
                   truncated=out.truncated.float().mean().item(),
                   gepo_margin=pref_stats.get("margin", 0.0), gepo_winner_var=pref_stats.get("winner_var", 0.0),
                   grad_norm=grad_norm, grad_cos=grad_cos,
                   time_rollout=t1 - t0, time_reward=t2 - t1, time_update=t3 - t2,
                   rollout_tok_per_s=n_tokens / (t1 - t0))
        log_metrics(row)
        langs = " ".join(f"{lang} {r:.2f}" for lang, r in row["pass_rate"].items())
        print(f"oorl step {step} | reward {row['reward']:.3f} | kl {kl:.4f} | entropy {row['entropy']:.3f} | "
              f"clip {row['clip_frac']:.3f} | gepo {row['loss_gepo']:.4f} margin {row['gepo_margin']:.3f} | "
              f"zero-adv {row['zero_adv_share']:.2f} | grad cos {'-' if grad_cos is None else f'{grad_cos:.3f}'} | "
              f"{langs} | time rollout {t1 - t0:.1f}s reward "
              f"{t2 - t1:.1f}s update {t3 - t2:.1f}s | {progress('oorl', step, rl_steps, t_start)}")
        if (step + 1) % ckpt_interval == 0 or step == rl_steps - 1:
            save_checkpoint(ckpt_path, stage="oorl", step=step + 1, model=model.state_dict(),
                            optimizer=optimizer.state_dict(), config=config, python_rng=rng,
                            generator=generator.get_state())
    save_checkpoint(os.path.join(out_dir, "oorl.pt"), model=model.state_dict(), model_args=model.config.__dict__,
                    config=config, stage="oorl")


# ----------------------------------------------------------------------------- main
sft_path = sft_ckpt or os.path.join(out_dir, "sft.pt")
if not sft_ckpt and not (state is not None and state["stage"] == "oorl"):
    model = new_model().to(device)
    if state is not None:
        print(f"resume: SFT from step {state['step']}")
        model.load_state_dict(state["model"])
    run_sft(model, state)
    state = None
# pi_ref is the SFT model, frozen; pi_theta starts from it (or from the resumed checkpoint)
sft = torch.load(sft_path, map_location=device, weights_only=False)
reference = load_model(sft).eval().requires_grad_(False)
model = load_model(sft)
if state is not None:
    print(f"resume: OORL from step {state['step']}")
    model.load_state_dict(state["model"])
if rl_steps > 0:
    run_oorl(model, reference, state)
print(f"done: checkpoints in {out_dir}/")
