"""
train.py: OORL in miniature, end to end.

Stage 1, SFT (sft.py): next-token loss on the completions of translation pairs (every source ->
every target, the held-out targets included) and of C -> LLVM IR pairs.           => out/sft.pt
Stage 2, OORL (paper eq. 10), one step as the loop body (run_oorl) reads:
    exp = collect(...)   prompts -> rollout (G completions each) -> reward (eq. 4, unit tests)
                         -> pi_old and pi_ref log-probs -> advantages (REINFORCE++), computed once;
                         and a batch of static IR groups with their reference log-probs
                         (filter_groups, replay_successes: which groups enter, curriculum.py)
    update(...)          L = w_rl * L_OnP (eq. 5, PPO epochs) + w_gepo * L_GEPO (eqs. 6-9, once)
    log_step(...)        one line and one metrics row                               => out/oorl.pt

    python train.py                          # the preset of the device: config/cpu.py or config/gpu.py
    python train.py config/smoke.py          # both stages in a couple of minutes on 2 CPU cores
    python train.py --resume=True            # continue a killed run from out_dir/ckpt.pt
    python train.py --sft_ckpt=out/sft.pt --out_dir=out/rl_only   # OORL from an existing SFT model
    python train.py --init_from=DIR          # start from a local Hugging Face GPT-2 / Llama / Qwen directory
    torchrun --standalone --nproc_per_node=4 train.py   # data-parallel on 4 GPUs (ddp.py)

Settings: the defaults below, then a preset file (config/<preset>.py) for every key you do not
set, then your config files and --key=value (configurator.py). Every step prints a line and
appends a JSON row to out_dir/metrics.jsonl (and to Weights & Biases with --wandb_log=True).
Batch sizes are global: under torchrun each of the N ranks takes its share of every batch and the
step is the one a single process would take on the whole batch.

The file reads top-down: the settings, the OORL loop and its step, the SFT loop, the helpers both
stages share, then the set-up and the main sequence at the bottom.
"""
import dataclasses
import json
import math
import os
import random
import subprocess
import sys
import time

import torch

import checkpoints
import curriculum
import ddp
import gepo
import logprobs
import metrics
import packing
import reinforce
import reward
import sandbox
import sft
import tasks
import tokenizer
from configurator import configure, fill_unset, read_file, snapshot
from model import GPT, GPTConfig
from rollout import rollout

# ----------------------------------------------------------------------------- settings
# A key marked "preset" is set by every preset that uses it (config/cpu.py, config/gpu.py,
# config/pretrained.py): its value here is never used, and only gives the key its type (the type
# configurator.py checks what you give against).
# I/O
out_dir = "out"
data_dir = "data"        # prepare.py fills it when it is missing (this default directory only)
preset = "auto"          # "cpu" | "gpu" | "pretrained" | "auto" (by device and init_from): config/<preset>.py
resume = False           # continue from out_dir/ckpt.pt (its settings hold unless you give them again)
sft_ckpt = ""            # start OORL from this finished SFT checkpoint (skips stage 1)
init_from = "scratch"    # "scratch", or a local Hugging Face directory (GPT-2, Llama, Qwen2, Qwen3)
seed = 1337
device = "auto"          # "auto" (CUDA if there is one) | "cpu" | "cuda" | "cuda:1" ...
dtype = "auto"           # "auto" (bfloat16 autocast on CUDA, float32 on CPUs) | "bfloat16" | "float32"
compile = False          # torch.compile the model's forward (worth it on a GPU for long runs)
allow_reduced_isolation = False  # run model-written code without bubblewrap (sandbox.py says what that means)
ckpt_interval = 25       # steps between checkpoints (and always at the end of a stage)
wandb_log = False        # also log every metrics row to Weights & Biases (WANDB_MODE=offline works)
wandb_project = "oorl"
wandb_run_name = "oorl"
# model: its size is the preset's (config/cpu.py, config/gpu.py), or with init_from the pretrained model's
n_layer = 0              # preset
n_head = 0               # preset
n_embd = 0               # preset
block_size = 0           # preset: the longest sequence the model reads, prompt and completion
dropout = 0.0            # SFT only: OORL runs the model without dropout (pi_old must be one policy)
bias = False
# stage 1: SFT
sft_steps = 0            # preset
sft_batch_size = 0       # preset
sft_lr = 2e-3            # (config/gpu.py and config/pretrained.py set their own)
sft_ir_share = 0.15      # share of SFT batches made of C -> IR pairs
sft_warmup_frac = 0.03   # share of SFT steps spent warming the learning rate up (config/pretrained.py: its own)
sft_eval_interval = 250  # SFT steps between validation losses on held-out pairs (and at the end; 0: the end only)
sft_eval_examples = 256  # held-out translation pairs, and as many C -> IR pairs, in each
# stage 2: OORL
rl_steps = 0             # preset
prompts_per_step = 0     # preset: B prompts per step ...
group_size = 0           # preset: ... G completions each
max_new_tokens = 160
temperature = 0.8        # sampling temperature (eval.py's too); the loss scores pi_theta at the same one
top_k = None             # None, or sample among the top_k tokens only
top_p = None             # None, or nucleus sampling with this probability mass
ppo_epochs = 2           # gradient steps on each batch of rollouts (eq. 5's ratio is 1 on the first)
clip_eps = 0.2           # eq. 5
epsilon_high = None      # DAPO's clip-higher: eq. 5's upper clip is 1 + epsilon_high (None: clip_eps)
beta_kl = 0.01           # KL to the SFT model (eq. 1); 0: no KL term and no reference forward
filter_groups = False    # DAPO's dynamic sampling: keep the groups whose rewards differ, refill (curriculum.py)
max_num_gen_batches = 3  # ... sampling at most this many rounds of prompts_per_step prompts a step
replay_successes = False # a stored success replaces one sample of an all-fail group (RLEP; curriculum.py)
adv_estimator = "reinforce++"  # "reinforce++" (the paper's) | "grpo"
rl_lr = 0.0              # preset
rl_warmup_frac = 0.0     # preset: share of OORL steps spent warming the learning rate up (paper: 3%)
weight_decay = 0.0       # paper: AdamW without weight decay
grad_clip = 1.0
micro_batch_tokens = 8192  # tokens a forward of the update takes at once (prompts with their completions)
w_rl = 1.0               # eq. 10
w_gepo = 0.01            # eq. 10 (paper: 0.01), applied once per RL step
pref_loss = "gepo"       # "gepo" | "dpo" | "none" (the ablation of the paper's Table 4)
gepo_beta = 0.1          # eq. 6's beta in the implicit reward
gepo_lam = 1.0           # eq. 9's weight of the winners' variance (paper: 1)
gepo_groups_per_step = 16  # IR groups a step (not part of eq. 10: w_gepo stays 0.01); RESULTS.md
                           # measures why 16 rather than the paper's 2
probe_interval = 5       # OORL steps between IR-equivalence probes on held-out groups (0: none)
probe_groups = 32        # held-out IR groups (data/ir_groups_val.jsonl) in each probe
max_infra_share = 0.5    # stop when more of a step's programs than this could not be judged
score_while_decoding = True  # score each completion as its row ends, while the others decode (a GPU
                             # then does not wait for the compilers); config/cpu.py: False, on a few
                             # cores both want them
CONFIG_KEYS = list(snapshot(globals()))


# ----------------------------------------------------------------------------- stage 2: OORL
@dataclasses.dataclass
class Experience:
    """One step's batch (this rank's share), computed once before the PPO epochs."""
    tasks: list              # the task of each completion
    verdicts: list           # reward.Verdict of each completion (eq. 4)
    learn: torch.Tensor      # (rows,) bool: learnt from (an infrastructure failure says nothing of the program)
    rollout: object          # rollout.Rollout: sampled tokens, mask, entropy
    batches: list            # packing.MicroBatch list
    n_tokens: float          # completion tokens learnt from, over every rank: the loss's denominator
    groups: list             # IR groups of the preference loss, with their reference log-probs
    ref_chosen: torch.Tensor = None
    ref_rejected: torch.Tensor = None
    replayed: list = dataclasses.field(default_factory=list)  # rows holding a replayed success
    gen_batches: int = 1     # rounds of sampling this step took (filter_groups)
    times: dict = dataclasses.field(default_factory=dict)


def run_oorl(policy, reference, rl_tasks, gepo_groups, probe_set):
    optimizer = policy.configure_optimizers(weight_decay, rl_lr, (0.9, 0.95), device)
    rng = random.Random(seed + 1)  # the same on every rank: the global batch's draws
    generator = torch.Generator(device=device).manual_seed(seed + 1 + rank)  # each rank's own samples
    start = checkpoints.restore_training_state(resumed, "oorl", optimizer, rng, generator, rank)
    if start:
        log(f"resume: OORL from step {start}")
    log(f"OORL: {len(rl_tasks)} RL prompts, {len(gepo_groups)} IR groups, pref_loss={pref_loss}, "
        f"adv_estimator={adv_estimator}")
    policy.eval()  # no dropout: pi_old, pi_theta and pi_ref must each be one policy
    t_start, previous_grad, ref_cache = time.time(), None, {}
    replay = curriculum.SuccessReplay()  # (a resumed run starts it empty)
    for step in range(start, rl_steps):
        lr = set_learning_rate(optimizer, step, rl_steps, rl_lr, rl_warmup_frac)
        exp = collect(step, policy, reference, rl_tasks, gepo_groups, rng, generator, ref_cache, replay)
        stats = update(policy, optimizer, exp)
        probe = {}
        if probe_set and probe_interval and (step % probe_interval == 0 or step == rl_steps - 1):
            with autocast:  # what GEPO trains, on IR groups it never sees (eq. 6's margin against pi_ref)
                found = gepo.probe(policy, reference, probe_set, beta=gepo_beta)
            probe = dict(probe_margin=found["margin"], probe_positive_share=found["positive_share"])
        previous_grad = log_step(step, lr, exp, stats, previous_grad, t_start, start, probe)
        if (step + 1) % ckpt_interval == 0 or step == rl_steps - 1:
            save_training_state("oorl", step + 1, policy, optimizer, rng, generator)
    save_checkpoint(os.path.join(out_dir, "oorl.pt"), policy, stage="oorl")


def collect(step, policy, reference, rl_tasks, gepo_groups, rng, generator, ref_cache, replay):
    """prompts -> rollout -> reward -> log-probs -> advantages, and the step's IR groups."""
    times = dict(time_rollout=0.0, time_reward=0.0)
    chosen = ddp.shard(rng.sample(rl_tasks, prompts_per_step))
    rounds = [(chosen, *sample_and_score(policy, chosen, generator, replay, times))]
    # DAPO's dynamic sampling: more rounds of prompts until this rank's share holds as many groups
    # whose rewards differ; drawn by a generator of the step's own, so that rng draws the first
    # round's prompts as a run without it does (the ablation's rows see common prompts)
    refill = random.Random(f"{seed} {step} refill")
    while filter_groups and len(rounds) < max_num_gen_batches and sum(curriculum.with_spread(
            [v.reward for _, _, verdicts in rounds for v in verdicts], group_size)) < len(chosen):
        more = ddp.shard(refill.sample(rl_tasks, prompts_per_step))
        rounds.append((more, *sample_and_score(policy, more, generator, replay, times)))
    chosen, out, verdicts = curriculum.fill_with_spread(rounds, group_size, len(chosen)) if filter_groups else rounds[0]
    batch, prompt_ids = zip(*chosen)
    row_tasks = [t for t in batch for _ in range(group_size)]
    # RLEP: a stored success in each group that failed G times (its advantage then has a spread)
    replayed = replay.fill(row_tasks, out, verdicts, tok.eot) if replay_successes else []
    completions = out.completion_lists(with_eot=True)  # end-of-text included: its probability counts
    infra = torch.tensor([v.status == "infra_error" for v in verdicts])  # the machinery failed, not the program
    failed, judged = ddp.all_sum(torch.tensor([infra.sum(), len(infra)], dtype=torch.float64)).tolist()
    if failed > max_infra_share * judged:
        raise SystemExit(f"OORL: {int(failed)} of {int(judged)} programs could not be judged (the sandbox or a "
                         f"toolchain failed, not the programs): `python sandbox.py` and `python reward.py` say why")
    if adv_estimator == "grpo":  # GRPO compares a prompt's G completions: a group with a gap is left out
        infra = infra.view(-1, group_size).any(1, keepdim=True).expand(-1, group_size).flatten()
    learn = (~infra).to(device)
    batches = packing.micro_batches(prompt_ids, completions, group_size, micro_batch_tokens)
    t3 = time.time()
    # pi_old is what the training forward computes (the rollout's decode is another computation,
    # in bf16 under autocast), so that each step starts at ratio 1 and, at step 0, KL 0
    with autocast:
        for b, (logp, mask) in zip(batches, packing.logprobs_of(policy, batches, group_size, temperature)):
            b.logp_old, b.mask = logp, mask & learn[b.rows, None]
    t4 = time.time()
    # pi_ref only serves the KL term: without one (beta_kl = 0, as DAPO trains) its forward is
    # skipped and pi_ref stands at pi_old, which makes every KL figure 0
    with autocast:
        references = (packing.logprobs_of(reference, batches, group_size, temperature) if beta_kl > 0
                      else [(b.logp_old, None) for b in batches])
    for b, (logp, _) in zip(batches, references):
        b.logp_ref = logp
    t5 = time.time()
    # advantages in the rollout's layout, (rows, max_new_tokens), over the rows learnt from
    layout, rewards = out.mask[learn], torch.tensor([v.reward for v in verdicts], device=device)[learn]
    advantages = torch.zeros(out.mask.shape, device=device)
    if adv_estimator == "reinforce++":
        logp_old, logp_ref = torch.zeros_like(advantages), torch.zeros_like(advantages)
        for b in batches:
            logp_old[b.rows, :b.mask.size(1)], logp_ref[b.rows, :b.mask.size(1)] = b.logp_old, b.logp_ref
        advantages[learn], _ = reinforce.reinforce_pp_advantages(rewards, logp_old[learn], logp_ref[learn], layout, beta_kl)
    else:
        advantages[learn] = reinforce.grpo_advantages(rewards, group_size, layout)
    for b in batches:
        b.advantages = advantages[b.rows, :b.mask.size(1)]
    # this rank's share of a global batch of IR groups (one pair of each for DPO), drawn by a
    # generator of the step's own: rng draws the prompts alone, so that runs of one seed see the
    # same prompts at every step whatever their pref_loss (the ablation's rows differ by their loss)
    groups = (ddp.shard(gepo.sample_groups(gepo_groups, gepo_groups_per_step, random.Random(f"{seed} {step}"),
                                           pairs=pref_loss == "dpo"))
              if pref_loss != "none" else [])
    exp = Experience(row_tasks, verdicts, learn, out, batches, ddp.all_sum_float(layout.sum()), groups,
                     replayed=replayed, gen_batches=len(rounds))
    t6 = time.time()
    if groups:
        with torch.no_grad(), autocast:  # the reference is frozen: each IR's log-prob is computed once a run
            exp.ref_chosen, exp.ref_rejected, _, _ = gepo.group_logps(reference, groups, device, ref_cache)
    exp.times = dict(times, time_reference=t5 - t4 + time.time() - t6, time_pi_old=t4 - t3)
    return exp


def update(policy, optimizer, exp):
    """ppo_epochs gradient steps of eq. 5 on the experience, each accumulated over its micro-batches
    (a token-level mean over the global batch, like DAPO); w_gepo * the preference loss enters
    the first epoch only: eq. 10 weighs it once per RL step, and GEPO's data are static and
    off-policy. Returns the figures the step line shows."""
    stats = dict(time_policy=[], time_preference=0.0, time_optimizer=0.0, loss_gepo=0.0, gepo_margin=0.0,
                 gepo_winner_var=0.0)
    for epoch in range(ppo_epochs):
        t0 = time.time()
        optimizer.zero_grad(set_to_none=True)
        loss_onp = clip_frac = 0.0
        for b in exp.batches:
            with autocast:
                logp, _ = policy.completion_logprobs(b.prompts, b.completions, group_size, temperature)
            loss, onp = reinforce.policy_loss(logp, b.logp_old, b.advantages, b.mask, clip_eps, exp.n_tokens, epsilon_high)
            if adv_estimator == "grpo" and beta_kl > 0:  # GRPO puts the KL in the loss (k3 estimator)
                loss = loss + beta_kl * reinforce.masked_mean(reinforce.kl_k3(logp, b.logp_ref, b.mask), b.mask, exp.n_tokens)
            (w_rl * loss).backward()
            loss_onp, clip_frac = loss_onp + loss.item(), clip_frac + onp["clip_frac"]
        t1 = time.time()
        if epoch == 0 and exp.groups:
            with autocast:
                loss_pref, pref = gepo.preference_loss(policy, exp.groups, exp.ref_chosen, exp.ref_rejected, pref_loss,
                                                       gepo_beta, gepo_lam, device)
            # this rank's share of the mean over the global batch of groups
            loss_pref = loss_pref * len(exp.groups) / gepo_groups_per_step
            (w_gepo * loss_pref).backward()
            stats.update(loss_gepo=loss_pref.item(), gepo_margin=pref["margin"] * len(exp.groups),
                         gepo_winner_var=pref["winner_var"] * len(exp.groups))
        t2 = time.time()
        norm = sum_gradients_and_clip(policy)
        if epoch == 0:
            # Signal vs noise: two batches of different prompts share only the expected gradient,
            # so the cosine of successive steps' gradients is near 0 when a batch's gradient is
            # mostly sampling noise (Adam then takes lr-sized steps in noise).
            grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in policy.parameters()]
            stats.update(grad=torch.cat([g.flatten() for g in grads]), grad_norm=norm.item())
        optimizer.step()
        stats["time_policy"].append(t1 - t0)
        stats["time_preference"] += t2 - t1
        stats["time_optimizer"] += time.time() - t2
    return dict(stats, loss_onp=loss_onp, clip_frac=clip_frac)


def log_step(step, lr, exp, stats, previous_grad, t_start, start, probe):
    """The step's row in metrics.jsonl and its line (metrics.py); returns its gradient."""
    row, grad = metrics.oorl_row(step, lr, exp, stats, previous_grad, probe, group_size, beta_kl > 0, world_size)
    log_metrics(row)
    log(metrics.oorl_line(row, replay_successes, filter_groups) + f" | {metrics.progress('oorl', step, rl_steps, t_start, start)}")
    return grad


def sample_and_score(policy, chosen, generator, replay, times):
    """G completions of each (task, prompt ids) of chosen, and their verdicts; the successes
    stored for replay_successes. Adds its seconds to times."""
    t0 = time.time()
    row_tasks = [t for t, _ in chosen for _ in range(group_size)]
    # eq. 4: compile and run every completion's unit tests (cut-off ones get 0): each row as soon
    # as it has ended, while the rest decode (score_while_decoding), or all of them after decoding
    with reward.Scorer(row_tasks) as scorer, autocast:
        hand_over = lambda rows, ids, cut: scorer.submit(rows, list(map(tok.decode, ids)), cut)
        out = rollout(policy, [ids for _, ids in chosen], group_size, max_new_tokens, tok.eot, temperature, top_k,
                      top_p, generator, on_end=hand_over if score_while_decoding else None)
        t1 = time.time()
        if not score_while_decoding:
            hand_over(range(len(row_tasks)), out.completion_lists(), out.truncated.tolist())
    verdicts = list(scorer.verdicts)
    if replay_successes:
        replay.record(row_tasks, out.completion_lists(with_eot=True), verdicts)
    times["time_rollout"] += t1 - t0
    times["time_reward"] += time.time() - t1
    return out, verdicts


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


# ----------------------------------------------------------------------------- stage 1: SFT
def run_sft(policy):
    """sft_steps steps of next-token loss on the completions of sft.py's examples, the validation
    losses on held-out pairs every sft_eval_interval steps; sft.pt at the end."""
    block = policy.config.block_size
    translations, irs = (sft.fitting(examples, block) for examples in sft.pairs(tok, train_tasks, ir_groups))
    val_translations, val_irs = (sft.spread(sft.fitting(examples, block), sft_eval_examples)
                                 for examples in sft.pairs(tok, read_jsonl("tasks_val.jsonl"), val_ir_groups))
    optimizer = policy.configure_optimizers(0.1, sft_lr, (0.9, 0.95), device)
    rng, generator = random.Random(seed), torch.default_generator
    start = checkpoints.restore_training_state(resumed, "sft", optimizer, rng, generator, rank)
    if start:
        log(f"resume: SFT from step {start}")
    log(f"SFT: {len(translations)} translation and {len(irs)} C -> IR examples, "
        f"{policy.get_num_params() / 1e6:.2f}M parameters")
    t_start, t_log, logged = time.time(), time.time(), start - 1
    policy.train()
    for step in range(start, sft_steps):
        lr = set_learning_rate(optimizer, step, sft_steps, sft_lr, sft_warmup_frac)
        idx, targets = sft.batch(rng, translations, irs, sft_ir_share, sft_batch_size, tok.eot, device)
        local_tokens = (targets >= 0).sum()
        supervised = ddp.all_sum(local_tokens.clone())
        with autocast:
            _, loss = policy(idx, targets=targets)
        # the mean over this rank's tokens, rescaled to its share of the mean over all ranks' tokens
        loss = loss * local_tokens / supervised.clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sum_gradients_and_clip(policy)
        optimizer.step()
        validate = step == sft_steps - 1 or (sft_eval_interval > 0 and step % sft_eval_interval == 0)
        if step % 10 == 0 or validate:  # the only host syncs: a GPU is never kept waiting
            loss_value = ddp.all_sum(loss.detach().float()).item()
            dt = (time.time() - t_log) / (step - logged)  # seconds per step since the last line
            computed = ddp.all_sum_float(idx.numel())  # every position runs through the model, padding too
            row = dict(step=step, stage="sft", loss=loss_value, lr=lr, tokens_per_s=computed / dt)
            if torch.device(device).type == "cuda":
                row["mfu"] = policy.estimate_mfu(idx.numel(), dt, seq_len=idx.size(1))
            if validate:
                row.update(val_loss=sft.validation_loss(policy, val_translations, sft_batch_size, tok.eot, device, autocast),
                           val_loss_ir=sft.validation_loss(policy, val_irs, sft_batch_size, tok.eot, device, autocast))
            log(f"{metrics.sft_line(row)} | {metrics.progress('sft', step, sft_steps, t_start, start)}")
            log_metrics(row)
            t_log, logged = time.time(), step
        if (step + 1) % ckpt_interval == 0 or step == sft_steps - 1:
            save_training_state("sft", step + 1, policy, optimizer, rng, generator)
    save_checkpoint(os.path.join(out_dir, "sft.pt"), policy, stage="sft")


# ----------------------------------------------------------------------------- helpers of both stages
def log(*args):
    if master:
        print(*args, flush=True)


def read_jsonl(name):
    with open(os.path.join(data_dir, name)) as f:
        return [json.loads(line) for line in f]


def read_checkpoint(path):
    """A checkpoint of this run's tokenizer: anything else would read token ids that mean other text."""
    try:
        checkpoint = checkpoints.load(path)
        checkpoints.check_tokenizer(checkpoint, tok.record(), path)
    except ValueError as error:
        raise SystemExit(str(error))
    return checkpoint


def save_checkpoint(path, model, **contents):
    """Rank 0 writes it (checkpoints.save: atomic, loads without running code), with this run's record."""
    if master:
        checkpoints.save(path, model, config=config, tokenizer=tok.record(), world_size=world_size, **contents)


def save_training_state(stage, step, model, optimizer, rng, generator):
    """ckpt.pt, what a killed run resumes from (checkpoints.training_state), with every rank's
    generator state."""
    states = ddp.gather(generator.get_state())
    save_checkpoint(ckpt_path, model, **checkpoints.training_state(stage, step, optimizer, rng, states))


def set_learning_rate(optimizer, step, total, base_lr, warmup_frac):
    """Linear warm-up over warmup_frac of the steps, then cosine decay to a tenth."""
    warmup = max(1, int(warmup_frac * total))
    progress = (step - warmup) / max(1, total - warmup)
    lr = (base_lr * (step + 1) / warmup if step < warmup
          else base_lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))))
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def sum_gradients_and_clip(model):
    """Each rank's loss is its share of the global batch's loss: summing the gradients over the
    ranks gives the whole batch's gradient, then every rank clips and steps alike (ddp.py)."""
    ddp.sum_gradients(model.parameters())
    return torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)


def log_metrics(row):
    if master:
        with open(os.path.join(out_dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")
        if wandb_log:
            wandb.log(row, step=row["step"] + (sft_steps if row["stage"] == "oorl" else 0))


def scratch_config(vocab_size):
    """The GPTConfig of a model trained from scratch at this run's settings."""
    return GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                     dropout=dropout, bias=bias)


def new_model():
    if init_from == "scratch":
        return GPT(scratch_config(tok.n_vocab))
    try:  # (the embedding table cut to the tokenizer's ids: a sampled id must be one it can decode)
        return GPT.from_pretrained(init_from, vocab_size=tok.n_vocab)
    except ValueError as error:
        raise SystemExit(str(error))


def compiled(model):
    return model.compile_blocks() if compile else model


def check(ok, key, allowed):
    if not ok:
        raise SystemExit(f"setting {key}={globals()[key]!r} is not allowed: {allowed}")


def validate_settings():
    """Every setting checked before any work: a bad value fails now, naming the key, not after
    the minutes of SFT that come before the first use of most of them. Each check is made once:
    configurator.py has checked the types, ddp.setup checks device and dtype (next), and the
    model's shape is GPTConfig's to check."""
    for key in ("sft_batch_size", "prompts_per_step", "group_size", "max_new_tokens", "ppo_epochs",
                "gepo_groups_per_step", "ckpt_interval", "probe_groups", "micro_batch_tokens", "max_num_gen_batches",
                "sft_eval_examples"):
        check(globals()[key] >= 1, key, "an integer >= 1")
    for key in ("sft_steps", "rl_steps", "probe_interval", "sft_eval_interval"):
        check(globals()[key] >= 0, key, "an integer >= 0")
    for key in ("sft_lr", "rl_lr", "temperature", "clip_eps", "grad_clip", "gepo_beta"):
        check(globals()[key] > 0, key, "a number > 0")
    for key in ("beta_kl", "weight_decay", "w_rl", "w_gepo", "gepo_lam"):
        check(globals()[key] >= 0, key, "a number >= 0")
    for key in ("sft_ir_share", "sft_warmup_frac", "rl_warmup_frac", "max_infra_share"):
        check(0 <= globals()[key] <= 1, key, "a share between 0 and 1")
    check(0 <= dropout < 1, "dropout", "0 <= dropout < 1")
    check(epsilon_high is None or (isinstance(epsilon_high, (int, float)) and epsilon_high > 0), "epsilon_high",
          "None or a number > 0")
    for key in ("filter_groups", "replay_successes"):
        check(isinstance(globals()[key], bool), key, "True or False")
    check(top_k is None or (isinstance(top_k, int) and top_k >= 1), "top_k", "None or an integer >= 1")
    check(top_p is None or (isinstance(top_p, (int, float)) and 0 < top_p <= 1), "top_p", "None or a number in (0, 1]")
    check(adv_estimator in ("reinforce++", "grpo"), "adv_estimator", "'reinforce++' or 'grpo'")
    check(adv_estimator != "grpo" or group_size >= 2, "group_size", "at least 2 with grpo (it compares a group)")
    check(pref_loss in ("gepo", "dpo", "none"), "pref_loss", "'gepo', 'dpo' or 'none'")
    check(init_from == "scratch" or os.path.isdir(init_from), "init_from",
          "'scratch' or a directory holding a Hugging Face GPT-2, Llama, Qwen2 or Qwen3 checkpoint")
    check(init_from != "scratch" or preset != "pretrained", "preset",
          "'pretrained' with --init_from=DIR only (the model it starts from)")
    check(not sft_ckpt or os.path.isfile(sft_ckpt), "sft_ckpt", "'' or the path of an existing sft.pt")
    if init_from == "scratch":
        for key in ("n_layer", "n_head", "n_embd", "block_size"):
            check(globals()[key] >= 1, key, "an integer >= 1")
        try:  # (the vocabulary is the data's, read later: it plays no part in GPTConfig's checks)
            scratch_config(vocab_size=1)
        except ValueError as error:
            raise SystemExit(f"setting: {error}")
    # every rank rolls out at least one prompt (a rank may hold none of a step's IR groups)
    for key in ("sft_batch_size", "prompts_per_step"):
        check(globals()[key] >= int(os.environ.get("WORLD_SIZE", "1")), key, "at least one for each torchrun rank")


# ----------------------------------------------------------------------------- set-up
was_set = configure(globals(), sys.argv[1:])
PROJECT_DIR = os.path.dirname(os.path.abspath(__file__))  # (defined after the settings: not one of them)
ckpt_path = os.path.join(out_dir, "ckpt.pt")
resumed = None           # the checkpoint a resumed run continues from
if resume and os.path.exists(ckpt_path):
    try:
        resumed = checkpoints.load(ckpt_path)
    except ValueError as error:
        raise SystemExit(f"resume: {error}")
    fill_unset(globals(), resumed["config"], was_set | {"resume"}, ckpt_path, strict=False)
else:
    if resume:
        print(f"resume: no {ckpt_path} yet, starting afresh")
    if preset == "auto":  # by the device the run will use, not by whether the machine has a GPU
        on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        preset = "pretrained" if init_from != "scratch" else "gpu" if on_gpu else "cpu"
    preset_file = os.path.join(PROJECT_DIR, "config", f"{preset}.py")
    if preset not in ("cpu", "gpu", "pretrained"):
        raise SystemExit(f"unknown preset {preset!r}: choose cpu, gpu, pretrained or auto")
    fill_unset(globals(), read_file(preset_file), was_set, f"config/{preset}.py")
config = {key: globals()[key] for key in CONFIG_KEYS}
validate_settings()
try:
    rank, world_size, device, autocast = ddp.setup(device, dtype)
except ValueError as error:
    raise SystemExit(str(error))
except RuntimeError as error:  # torch.device's, for a device string it cannot read
    raise SystemExit(f"setting device={device!r} is not allowed: {error}")
master = rank == 0  # rank 0 alone prints, logs and writes checkpoints
torch.manual_seed(seed)
log(f"preset: {preset} (settings you gave win over it); device {device}" + (f", {world_size} ranks" if world_size > 1 else ""))
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
if wandb_log and master:
    import wandb
    wandb.init(project=wandb_project, name=wandb_run_name, config=config)
train_tasks = read_jsonl("tasks_train.jsonl")
ir_groups = read_jsonl("ir_groups.jsonl")
val_ir_groups = read_jsonl("ir_groups_val.jsonl") if os.path.exists(os.path.join(data_dir, "ir_groups_val.jsonl")) else []
if resumed is not None:  # refuse to resume into a different run; other changes are allowed, and said
    try:
        changed = checkpoints.check_resume(resumed, config, world_size, tok.record(), ckpt_path)
    except ValueError as error:
        raise SystemExit(f"resume: {error}")
    if changed:
        log("resume: changed settings: " + ", ".join(f"{k}={config[k]!r}" for k in changed))
    if master:
        checkpoints.trim_metrics(os.path.join(out_dir, "metrics.jsonl"), resumed["stage"], resumed["step"])

# ----------------------------------------------------------------------------- main
reward.share_cores(ddp.local_world_size())  # this rank's share of the machine's cores for the reward
sft_path = sft_ckpt or os.path.join(out_dir, "sft.pt")
run_sft_stage = not sft_ckpt and not (resumed is not None and resumed["stage"] == "oorl")
if run_sft_stage:
    policy = compiled(new_model().to(device))
    ddp.broadcast_parameters(policy)
    model_args = vars(policy.config)
else:
    sft_model = read_checkpoint(sft_path)
    model_args = sft_model["model_args"]
policy_block_size = model_args["block_size"]
# the fused log-prob kernel checked against the torch path now, in a child process, at this run's
# shapes (a kernel that faults would take the trainer's GPU context with it)
log(logprobs.self_check(device, getattr(autocast, "fast_dtype", torch.float32), micro_batch_tokens,
                        model_args["n_embd"], model_args["vocab_size"])[1])
# prompts and IR groups are filtered with the block size of the model that will read them, and
# checked against the settings now, before SFT
rl_tasks = rl_prompts(policy_block_size) if rl_steps > 0 else []
gepo_groups = (gepo.encode_groups(ir_groups, tok.encode, tok.eot, policy_block_size)
               if rl_steps > 0 and pref_loss != "none" else [])
probe_set = (gepo.encode_groups(val_ir_groups, tok.encode, tok.eot, policy_block_size)[:probe_groups]
             if rl_steps > 0 and probe_interval else [])
if rl_steps > 0 and len(rl_tasks) < prompts_per_step:
    raise SystemExit(f"setting prompts_per_step={prompts_per_step} is not allowed: the RL split has "
                     f"{len(rl_tasks)} prompts that leave room for max_new_tokens={max_new_tokens} in the "
                     f"model's block of {policy_block_size} tokens")
if rl_steps > 0 and pref_loss != "none" and len(gepo_groups) < gepo_groups_per_step:
    raise SystemExit(f"setting gepo_groups_per_step={gepo_groups_per_step} is not allowed: "
                     f"{len(gepo_groups)} IR groups fit the model's block of {policy_block_size} tokens")
if run_sft_stage:
    if resumed is not None:
        policy.load_state_dict(resumed["model"])
    run_sft(policy)
    resumed = None
    ddp.barrier()  # rank 0 has written sft.pt
    sft_model = read_checkpoint(sft_path)
# pi_ref is the SFT model, frozen; pi_theta starts from it (or from the resumed checkpoint)
reference = compiled(GPT.from_checkpoint(sft_model, device).eval().requires_grad_(False))
policy = compiled(GPT.from_checkpoint(sft_model, device))
if resumed is not None:
    policy.load_state_dict(resumed["model"])
if rl_steps > 0:
    run_oorl(policy, reference, rl_tasks, gepo_groups, probe_set)
log(f"done: checkpoints in {out_dir}/")
ddp.teardown()
