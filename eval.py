"""
eval.py: how well does a checkpoint translate? pass@k with 95% confidence intervals per
(source -> target) pair, per target language, RL targets and held-out targets apart; two
checkpoints compared task by task (the paired difference and its interval); the IR-equivalence
probe (does the policy prefer equivalent IRs over inequivalent ones, relative to its SFT model?).

    python eval.py --ckpt=out/oorl.pt                         # -> out/oorl.eval.json
    python eval.py --ckpt=out/oorl.pt --compare=out/sft.pt    # both, and their paired difference
    python eval.py --ckpt=out/oorl.pt --show=5                # also print 5 translations and verdicts
    python eval.py --ckpt=out/oorl.pt --greedy=True           # greedy decoding: n = 1, temperature 0
    python eval.py --ckpt=out/oorl.pt --compare=out/sft.pt --max_tasks_per_pair=50 --n=4 --budget=40
                                                              # interval width per (tasks, n) at 40 programs a pair
    torchrun --standalone --nproc_per_node=2 eval.py -- --ckpt=out/oorl.pt --n=4   # tasks sharded over 2 ranks
    python eval.py --plot=out/metrics.jsonl                   # training curves -> out/metrics.png
    python eval.py --ckpt=out/oorl.pt --benchmark=multipl-e/  # a public benchmark (benchmarks.py), as Table 2
    python eval.py --benchmark=humaneval-x/ --completions=mine.jsonl   # completions made elsewhere, no model

For every selected task, n completions are sampled with the KV cache (rollout.py) and each is run
against the task's unit tests (reward.py): 1 if it is well formed, compiles and passes every test,
else 0 (eq. 4; a completion cut off at max_new_tokens gets 0). With c of the n samples passing,
pass@k is estimated without bias as 1 - C(n-c, k) / C(n, k) (Chen et al. 2021), averaged over the
tasks of a pair; a group of pairs (a target language, the RL targets, the held-out targets, all)
is the mean over its pairs, so that every (source -> target) pair weighs the same. The tasks are
the first max_tasks_per_pair of each pair in the split's file order, and the sampling seed of a
batch depends only on the seed and the batch's place in a fixed order: two checkpoints see the
same tasks with the same seeds, and the split of the batches over torchrun ranks changes nothing.

Statistics (stats.py): every figure carries a 95% interval over tasks (`stats.estimate`), and
--compare gives the paired difference of two checkpoints task by task (`stats.paired`). For
pass@1 at a fixed number of programs, more tasks with fewer samples each give the narrower
interval; `--budget` measures it (`stats.budget_table`). Defaults: one sample per task at T=0.8
on 100 tasks per pair, 1600 programs (16 pairs): measured, the narrowest paired interval for
its number of programs (RESULTS.md, "Evaluation budget").
pass@k needs --n=k or more.

Under torchrun, write `--` after eval.py: torchrun reads an option that abbreviates one of its
own (--n=4: --nnodes, --nproc_per_node) as its own. Every rank samples and scores its share of the
batches (its reward workers and torch threads sized to its share of the cores); rank 0 alone
gathers, prints and writes, and the JSON equals one process's.

A public benchmark (--benchmark=FILE or folder: MultiPL-E, HumanEval-X) is sampled in one process:
a base model continues each prompt up to the benchmark's stop tokens, a chat model (--chat=True)
answers the prompt put in its chat template and its reply's first code block is the completion;
--translate_from=FILE makes HumanEval-X a translation task from that file's language. Each
completion is judged by benchmarks.judge as the benchmark's reference harness would judge it, only
stricter (the tests must run to their end); pass@k per language with its 95% interval over
problems, the average over languages, and with --compare the paired difference per language.

Languages whose toolchain is missing (reward.available) are dropped from the evaluated pairs,
with one message naming them. The results go to <checkpoint without .pt>.eval.json beside the
checkpoint and are reused when the same checkpoint (same modification time) is evaluated again
with the same settings.
"""
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext

import torch

import benchmarks
import checkpoints
import ddp
import gepo
import metrics
import reward
import tasks
import tokenizer
from configurator import configure, snapshot
from model import GPT
from rollout import rollout
from stats import budget_table, paired, pass_at_k, summarize  # noqa: F401 (eval.pass_at_k: DESIGN.md's public name)

# ----------------------------------------------------------------------------- configuration
ckpt = "out/oorl.pt"
compare = ""             # a second checkpoint, evaluated with the same settings; the paired difference is shown
ref_ckpt = ""            # the IR probe's reference (SFT) model ("": --compare's checkpoint; neither: no probe)
out_json = ""            # where to write the results ("": the checkpoint's path with .eval.json)
data_dir = ""            # "": the data_dir the checkpoint was trained on
split = "test"           # "test" | "val" | "train"
n = 1                    # samples per task; pass@k is reported for the k in stats.KS with k <= n
temperature = 0.8
top_k = None
top_p = None
greedy = False           # pass@1 of greedy decoding (temperature 0, n = 1)
max_new_tokens = 0       # 0: the checkpoint's own max_new_tokens
max_tasks_per_pair = 100  # the first tasks of each (source -> target) pair (0: every task of the split)
batch_size = 160         # completions decoded together (prompts per batch = batch_size // n)
seed = 1337
device = "auto"          # "cpu" | "cuda" | "auto"
reuse = True             # reuse an existing .eval.json of the same checkpoint and settings
show = 0                 # print this many sampled translations with their verdicts
probe_groups = "ir_groups_val.jsonl"  # the IR probe's held-out groups, in data_dir ("": no probe)
budget = 0               # > 0 with --compare: interval widths of (tasks, n) choices at this many programs a pair
plot = ""                # plot a train.py metrics.jsonl (training curves) and exit
benchmark = ""           # a MultiPL-E or HumanEval-X file or folder (benchmarks.py): pass@k per language, as Table 2
completions = ""         # with --benchmark: score these instead of sampling (JSONL {"name" or "task_id", "completion"})
translate_from = ""      # with --benchmark (HumanEval-X): translate this HumanEval-X file's solutions into its languages
chat = False             # with --benchmark: the prompt in the checkpoint's chat template; the reply's first code block


# ----------------------------------------------------------------------------- loading and sharding

def read_checkpoint(path):
    """checkpoints.load, its error (missing, random bytes, not a checkpoint) as one line."""
    try:
        return checkpoints.load(path)
    except ValueError as e:
        raise SystemExit(f"eval.py: {e}") from None


def load(path, device):
    """(model in eval mode, tokenizer, the run's config) from a train.py checkpoint (sft.pt /
    oorl.pt). Loaded with weights_only=True: a checkpoint holds tensors and plain data only, so
    loading one can never run code. The tokenizer is the one recorded in the checkpoint (older
    checkpoints without a record: the project tokenizer of the run's data_dir)."""
    checkpoint = read_checkpoint(path)
    if "config" not in checkpoint:
        raise SystemExit(f"{path} is not a finished train.py checkpoint (sft.pt or oorl.pt, with model, "
                         f"model_args and config); ckpt.pt is the resumable training state")
    model = GPT.from_checkpoint(checkpoint, device).eval()
    config = checkpoint["config"]
    enc = (tokenizer.from_record(checkpoint["tokenizer"]) if "tokenizer" in checkpoint
           else tokenizer.load(config["data_dir"]))
    return model, enc, config


def distributed_setup(device_request):
    """(rank, world_size, device, autocast). Under torchrun, ddp.setup joins the process group
    (NCCL on CUDA, one GPU per rank; gloo on CPU, the cores split between the ranks), and each
    rank's reward workers get its share of the cores, so that N ranks on one machine do not run N
    times the programs the cores can take."""
    rank, world, device_name, autocast = ddp.setup(device_request)
    reward.share_cores(ddp.local_world_size())
    return rank, world, device_name, autocast


def select_tasks(all_tasks, per_pair, fits, targets):
    """The first per_pair tasks (0: all) of every pair from a paper source language to one of
    `targets`, in file order, skipping prompts that leave no room for the completion: returns
    ({pair: [task]}, how many were skipped)."""
    by_pair, too_long = {}, 0
    for task in all_tasks:
        if task["src_lang"] not in tasks.SOURCE_LANGS or task["tgt_lang"] not in targets:
            continue
        if not fits(task):
            too_long += 1
            continue
        chosen = by_pair.setdefault(f"{task['src_lang']}->{task['tgt_lang']}", [])
        if per_pair == 0 or len(chosen) < per_pair:
            chosen.append(task)
    return by_pair, too_long


def available_targets(rank):
    """The RL and held-out targets whose toolchain works here (decided on rank 0, for every rank):
    a language that cannot run would score 0 on every task and pull its pairs down for nothing."""
    decided = ddp.gather([t for t in tasks.RL_TARGETS + tasks.HELDOUT_TARGETS if reward.available(t)]
                         if rank == 0 else None)[0]
    missing = [t for t in tasks.RL_TARGETS + tasks.HELDOUT_TARGETS if t not in decided]
    if missing and rank == 0:
        print(f"not evaluated: {', '.join(missing)} (toolchain missing; `python reward.py` says what to install)")
    return decided, missing


def resolve_settings(config, checkpoint_config):
    """The settings an evaluation's numbers depend on, with the checkpoint's defaults filled in."""
    greedy_run = config["greedy"]
    return dict(split=config["split"], n=1 if greedy_run else config["n"],
                temperature=0.0 if greedy_run else config["temperature"], greedy=greedy_run,
                top_k=config["top_k"], top_p=config["top_p"],
                max_new_tokens=config["max_new_tokens"] or checkpoint_config["max_new_tokens"],
                max_tasks_per_pair=config["max_tasks_per_pair"], batch_size=config["batch_size"],
                seed=config["seed"], data_dir=config["data_dir"] or checkpoint_config["data_dir"])


# ----------------------------------------------------------------------------- sampling and scoring

def evaluate(ckpt_path, config, rank=0, world=1, device="cpu", autocast=nullcontext()):
    """Sample, score and summarize one checkpoint (this rank's share of the batches, gathered);
    returns the .eval.json dict (on every rank)."""
    model, enc, checkpoint_config = load(ckpt_path, device)
    s = resolve_settings(config, checkpoint_config)
    split_path = os.path.join(s["data_dir"], f"tasks_{s['split']}.jsonl")
    if not os.path.exists(split_path):
        raise SystemExit(f"no {split_path}: run `python prepare.py --data_dir={s['data_dir']}` or pick "
                         f"--split=test|val|train and --data_dir=DIR")
    with open(split_path) as f:
        split_tasks = [json.loads(line) for line in f]
    targets, dropped = available_targets(rank)
    prompt_ids = {}

    def fits(task):
        prompt_ids[task["id"]] = enc.encode(task["prompt"])
        return len(prompt_ids[task["id"]]) + s["max_new_tokens"] <= model.config.block_size

    by_pair, too_long = select_tasks(split_tasks, s["max_tasks_per_pair"], fits, targets)
    if too_long and rank == 0:
        print(f"skipped {too_long} tasks whose prompt + max_new_tokens exceed the model's block_size")
    if not by_pair:
        raise SystemExit(f"{split_path} has no task from {tasks.SOURCE_LANGS} to an available target")
    # one fixed order of batches (shuffled by the seed, so that every batch mixes languages); batch b
    # samples with its own seed and runs on rank b % world: the results never depend on the ranks
    order = [task for chosen in by_pair.values() for task in chosen]
    random.Random(s["seed"]).shuffle(order)
    per_batch = max(1, s["batch_size"] // s["n"])
    n_batches = math.ceil(len(order) / per_batch)
    if rank == 0:
        print(f"evaluating {ckpt_path}: {len(order)} tasks in {len(by_pair)} pairs x n={s['n']} samples "
              f"(T={s['temperature']}, max_new_tokens={s['max_new_tokens']}) on {s['split']}, {n_batches} batches"
              + (f" over {world} ranks" if world > 1 else ""))
    found, statuses, examples = {}, {}, []
    t_start, t_sample, t_score = time.time(), 0.0, 0.0
    for b in range(rank, n_batches, world):
        batch = order[b * per_batch:(b + 1) * per_batch]
        generator = torch.Generator(device=device).manual_seed(s["seed"] * 1_000_003 + b)
        t0 = time.time()
        # on a GPU, each row is scored as it ends while the others decode; on a CPU, decoding and
        # the compilers would share the same cores (config/cpu.py), so the rows are scored after
        with reward.Scorer([t for t in batch for _ in range(s["n"])]) as scorer, autocast:
            hand_over = lambda rows, ids, cut: scorer.submit(rows, list(map(enc.decode, ids)), cut)
            out = rollout(model, [prompt_ids[t["id"]] for t in batch], s["n"], s["max_new_tokens"],
                          enc.eot, s["temperature"], s["top_k"], s["top_p"], generator,
                          on_end=hand_over if torch.device(device).type == "cuda" else None)
            t1 = time.time()
            if torch.device(device).type != "cuda":
                hand_over(range(len(out.mask)), out.completion_lists(), out.truncated.tolist())
        verdicts, truncated = scorer.verdicts, out.truncated.tolist()
        completions = [enc.decode(ids) for ids in out.completion_lists()]
        t2 = time.time()
        t_sample, t_score = t_sample + t1 - t0, t_score + t2 - t1
        for i, task in enumerate(batch):
            # sample j of a task always has the same seed: "0110", kept for --budget (stats.py)
            found[task["id"]] = "".join(str(int(v.reward)) for v in verdicts[i * s["n"]:(i + 1) * s["n"]])
            place = b * per_batch + i
            if place < config["show"]:  # the first sample of the first tasks of the fixed order
                v = verdicts[i * s["n"]]
                examples.append((place, dict(pair=f"{task['src_lang']}->{task['tgt_lang']}", task=task["id"],
                                             source=task["source"], completion=completions[i * s["n"]],
                                             verdict=v.status, passed=v.passed, total=v.total,
                                             error=v.first_failure or v.error)))
        for v, cut in zip(verdicts, truncated):
            kind = "truncated" if cut else v.status
            statuses[kind] = statuses.get(kind, 0) + 1
        if rank == 0:
            done, elapsed = len(range(rank, b + 1, world)), time.time() - t_start
            left = len(range(b + world, n_batches, world))
            print(f"batch {b + 1}/{n_batches} | sampling {t1 - t0:.1f}s scoring after it {t2 - t1:.1f}s | "
                  f"elapsed {elapsed / 60:.1f} min | eta {elapsed / done * left / 60:.1f} min")

    shares = ddp.gather((found, statuses, examples, t_sample, t_score))
    found = {task_id: c for share in shares for task_id, c in share[0].items()}
    statuses = {kind: sum(share[1].get(kind, 0) for share in shares) for kind in sorted(set().union(*(sh[1] for sh in shares)))}
    outcomes = {pair: {t["id"]: found[t["id"]] for t in chosen} for pair, chosen in sorted(by_pair.items())}
    counts = {pair: {t: o.count("1") for t, o in by_task.items()} for pair, by_task in outcomes.items()}
    groups, pairs = summarize(counts, s["n"])
    return dict(ckpt=ckpt_path, ckpt_mtime=os.path.getmtime(ckpt_path), settings=s, groups=groups, pairs=pairs,
                not_evaluated=dropped, statuses=statuses, counts=counts, outcomes=outcomes,
                examples=[e for _, e in sorted(e for share in shares for e in share[2])],
                seconds=dict(sampling=sum(sh[3] for sh in shares), scoring=sum(sh[4] for sh in shares),
                             total=time.time() - t_start))


def ir_probe(policy_path, reference_path, data_dir, groups_file, device):
    """gepo.probe of the policy against its reference on held-out IR groups (never trained on):
    the GEPO margin (mean winner minus mean loser implicit reward, eqs. 6-9) and the share of
    groups where it is positive. 0 and 0 for the reference itself; > 0 once the policy has learnt
    to prefer equivalent IRs more than its SFT model did. None when the groups file is missing."""
    path = os.path.join(data_dir, groups_file)
    if not groups_file or not os.path.exists(path):
        print(f"no IR probe: no {path} (prepare.py writes it)")
        return None
    policy, enc, config = load(policy_path, device)
    reference, _, _ = load(reference_path, device)
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    groups = gepo.encode_groups(rows, enc.encode, enc.eot, policy.config.block_size)
    if not groups:
        print(f"no IR probe: no group of {path} fits in block_size {policy.config.block_size}")
        return None
    beta = config.get("gepo_beta", 0.1)
    return dict(gepo.probe(policy, reference, groups, beta=beta), beta=beta, reference=reference_path, file=path)


def default_json_path(ckpt_path):
    return os.path.splitext(ckpt_path)[0] + ".eval.json"


def write_json(result, json_path):
    """Atomically: a killed run never leaves half a file behind."""
    with open(json_path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(json_path + ".tmp", json_path)
    print(f"wrote {json_path}")


def evaluate_or_reuse(ckpt_path, json_path, config, rank, world, device, autocast):
    """Reuse json_path when it holds this checkpoint's results under the same settings (and
    enough examples for --show); otherwise evaluate, and write it from rank 0."""
    if config["reuse"] and os.path.exists(json_path) and os.path.exists(ckpt_path):
        with open(json_path) as f:
            previous = json.load(f)
        if (previous.get("settings") == resolve_settings(config, read_checkpoint(ckpt_path)["config"])
                and previous.get("ckpt_mtime") == os.path.getmtime(ckpt_path)
                and len(previous.get("examples", [])) >= config["show"] and "groups" in previous
                and ("outcomes" in previous or not config["budget"])):
            if rank == 0:
                print(f"reusing {json_path} (same checkpoint and settings; --reuse=False evaluates again)")
            return previous
    result = evaluate(ckpt_path, config, rank, world, device, autocast)
    if rank == 0:
        write_json(result, json_path)
    return result


# ----------------------------------------------------------------------------- reports

def percent(value, ci=None, signed=False):
    """'61.7 [52.1, 70.3]' in percent; '-' for a missing value."""
    if value is None:
        return "-"
    text = f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"
    if ci and ci[0] is not None:
        text += f" [{100 * ci[0]:{'+' if signed else ''}.1f}, {100 * ci[1]:{'+' if signed else ''}.1f}]"
    return text


def pass_matrix(pairs, title, k=1, signed=False):
    """Sources x targets pass@k in percent with each pair's 95% interval half-width (+-),
    RL targets | held-out targets."""
    groups = [tasks.RL_TARGETS, tasks.HELDOUT_TARGETS]
    key = f"pass@{k}"

    def cell(target, figure):
        if figure is None:
            text = "-"
        else:
            lo, hi = figure["ci95"][key]
            text = f"{100 * figure[key]:{'+' if signed else ''}.0f}"
            text += f"±{100 * (hi - lo) / 2:.0f}" if lo is not None else ""
        return f"{text:>{max(9, len(target) + 2)}}"

    header = "source \\ target"
    lines = [title, f"{header:<16}" + " |".join("".join(f"{t:>{max(9, len(t) + 2)}}" for t in targets)
                                               for targets in groups)]
    lines += [f"{src:<16}" + " |".join("".join(cell(t, pairs.get(f"{src}->{t}")) for t in targets) for targets in groups)
              for src in tasks.SOURCE_LANGS]
    return "\n".join(lines)


def group_lines(groups, signed=False):
    """One line per group: every pass@k with its 95% interval."""
    lines = []
    for name, figure in groups.items():
        ks = [key for key in figure if key.startswith("pass@")]
        lines.append(f"{name:>18}: " + "  ".join(f"{key} {percent(figure[key], figure['ci95'][key], signed)}" for key in ks)
                     + f"  ({figure['n_tasks']} tasks)")
    return lines


def report(result):
    """The printed summary of one evaluation."""
    s = result["settings"]
    title = (f"pass@1 (%) ± 95% interval half-width of {result['ckpt']} on {s['split']} (n={s['n']}, "
             f"T={s['temperature']}, {s['max_tasks_per_pair'] or 'all'} tasks per pair)")
    lines = [pass_matrix(result["pairs"], title), "pass@k (%) [95% interval], groups weigh their pairs equally:"]
    lines += group_lines(result["groups"])
    if result["not_evaluated"]:
        lines.append(f"not evaluated (toolchain missing): {', '.join(result['not_evaluated'])}")
    total = sum(result["statuses"].values())
    lines.append("outcomes: " + ", ".join(f"{kind} {100 * count / total:.0f}%" for kind, count in
                                         sorted(result["statuses"].items(), key=lambda kv: -kv[1])))
    if result.get("ir_probe"):
        p = result["ir_probe"]
        lines.append(f"IR probe on {p['groups']} held-out groups (vs {p['reference']}, beta {p['beta']}): "
                     f"margin {p['margin']:+.4f}, positive in {100 * p['positive_share']:.0f}% of groups")
    return "\n".join(lines)


def difference_report(difference):
    """The paired difference in points, per pair and per group, with 95% intervals."""
    title = f"paired difference in pass@1 (points) ± 95% half-width: {difference['ckpt']} - {difference['compared_with']}"
    return "\n".join([pass_matrix(difference["pairs"], title, signed=True),
                      "paired difference (points) [95% interval], same tasks and sampling seeds:"]
                     + group_lines(difference["groups"], signed=True))


def show_examples(result):
    """--show: each sampled translation with its source, the completion and the verdict."""
    lines = []
    for e in result["examples"]:
        lines += [f"===== {e['pair']} task {e['task']}: {e['verdict']} ({e['passed']}/{e['total']} tests)",
                  "--- source", e["source"].rstrip(), "--- completion", e["completion"].rstrip() or "(empty)"]
        if e["error"]:
            lines += ["--- first failure", e["error"].rstrip()]
    return "\n".join(lines)


def budget_report(a, b, programs_per_pair):
    """--budget: the paired interval's width at (tasks per pair, n) with tasks x n fixed."""
    rows, between, within = budget_table(a["outcomes"], b["outcomes"], programs_per_pair)
    lines = [f"paired pass@1 interval width (points) at {programs_per_pair} programs a pair, from "
             f"{a['settings']['max_tasks_per_pair']} tasks x n={a['settings']['n']}: between-task variance "
             f"{between:.4f}, within-task (one same-seed sample of each) {within:.4f}",
             f"{'tasks/pair':>10} {'n':>3} {'measured':>9} {'predicted':>9}"]
    lines += [f"{t:>10} {k:>3} {'-' if m is None else f'{100 * m:.2f}':>9} {100 * p:>9.2f}" for t, k, m, p in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- public benchmarks

def benchmark_samples(ckpt_path, prompts, config, device, autocast):
    """{name: [completion per sample]} sampled from a checkpoint, and the names whose prompt does
    not fit the model's block (they score 0, counted apart)."""
    model, enc, checkpoint_config = load(ckpt_path, device)
    s = resolve_settings(config, checkpoint_config)
    if config["chat"] and not hasattr(enc, "hf"):
        raise SystemExit("--chat=True needs a checkpoint with a Hugging Face tokenizer (its chat template)")
    ids = {}
    for name, (problem, prompt) in prompts.items():
        if config["chat"]:  # (the template's text holds its special tokens, e.g. a bos: none added)
            text = enc.hf.apply_chat_template([{"role": "user", "content": "Complete this code:\n" + prompt}],
                                              add_generation_prompt=True, tokenize=False)
            ids[name] = enc.hf.encode(text, add_special_tokens=False)
        else:
            ids[name] = enc.encode(prompt)
    too_long = [name for name in ids if len(ids[name]) + s["max_new_tokens"] > model.config.block_size]
    order, samples = [name for name in ids if name not in too_long], {}
    per_batch = max(1, s["batch_size"] // s["n"])
    for b in range(0, len(order), per_batch):
        batch = order[b:b + per_batch]
        generator = torch.Generator(device=device).manual_seed(s["seed"] * 1_000_003 + b)
        with autocast:
            out = rollout(model, [ids[name] for name in batch], s["n"], s["max_new_tokens"], enc.eot,
                          s["temperature"], s["top_k"], s["top_p"], generator)
        texts = [enc.decode(completion) for completion in out.completion_lists()]
        for i, name in enumerate(batch):
            problem = prompts[name][0]
            samples[name] = [benchmarks.cut(benchmarks.code_block(text, problem) if config["chat"] else text, problem)
                             for text in texts[i * s["n"]:(i + 1) * s["n"]]]
    return samples, too_long, s


def evaluate_benchmark(ckpt_path, config, device="cpu", autocast=nullcontext()):
    """pass@k per language on a public benchmark (a checkpoint's samples, or --completions: n is
    then the fewest completions a problem has, and each problem's first n count), the .json's
    "benchmark" entry (benchmarks.score)."""
    try:
        prompts = benchmarks.prompts(config["benchmark"], config["translate_from"])
        if config["completions"]:
            samples, too_long = benchmarks.read_completions(config["completions"], prompts), []
            s = dict(n=min(map(len, samples.values())))
    except (OSError, ValueError) as e:
        raise SystemExit(f"eval.py: {e}") from None
    if not config["completions"]:
        samples, too_long, s = benchmark_samples(ckpt_path, prompts, config, device, autocast)
    return dict(ckpt=ckpt_path or config["completions"], benchmark=benchmarks.score(prompts, samples, s["n"], too_long),
                prompt_too_long=len(too_long),
                settings=dict(s, benchmark=config["benchmark"], translate_from=config["translate_from"], chat=config["chat"]))


def benchmark_main(config):
    """--benchmark: one process (no torchrun sharding); the results to --out_json."""
    device_name, autocast = ddp.device_setup(config["device"]) if not config["completions"] else ("cpu", nullcontext())
    result = evaluate_benchmark(None if config["completions"] else config["ckpt"], config, device_name, autocast)
    other = evaluate_benchmark(config["compare"], config, device_name, autocast) if config["compare"] else None
    json_path = config["out_json"] or (config["completions"] or os.path.splitext(config["ckpt"])[0]) + ".benchmark.json"
    write_json(dict(result, compared_with=other), json_path)
    print(benchmarks.report(result, other))
    print(f"-> {json_path}")


# ----------------------------------------------------------------------------- main

def main(config):
    rank, world, device_name, autocast = distributed_setup(config["device"])
    result = evaluate_or_reuse(config["ckpt"], config["out_json"] or default_json_path(config["ckpt"]), config,
                               rank, world, device_name, autocast)
    other = (evaluate_or_reuse(config["compare"], default_json_path(config["compare"]), config, rank, world,
                               device_name, autocast) if config["compare"] else None)
    if rank == 0:
        # the probe and the difference belong to this run's --compare / --ref_ckpt: never reuse them
        stale = [result.pop(key) for key in ("ir_probe", "difference") if key in result]
        reference = config["ref_ckpt"] or config["compare"]
        if reference:  # cheap (no sampling): computed afresh every time, on rank 0 alone
            result["ir_probe"] = ir_probe(config["ckpt"], reference, result["settings"]["data_dir"],
                                          config["probe_groups"], device_name)
        if other is not None:
            groups, pairs = paired(result["counts"], other["counts"], result["settings"]["n"])
            result["difference"] = dict(ckpt=config["ckpt"], compared_with=config["compare"], groups=groups, pairs=pairs)
        if stale or reference:
            write_json(result, config["out_json"] or default_json_path(config["ckpt"]))
        if config["show"]:
            print(show_examples(result))
        print(report(result))
        if other is not None:
            print(report(other))
            print(difference_report(result["difference"]))
            if config["budget"]:
                print(budget_report(result, other, config["budget"]))
        metrics_path = os.path.join(os.path.dirname(config["ckpt"]), "metrics.jsonl")
        if os.path.exists(metrics_path):  # the training curves of the run that made this checkpoint
            metrics.plot(metrics_path)
    ddp.teardown()


if __name__ == "__main__":
    configure(globals(), sys.argv[1:])
    if plot:
        if not os.path.exists(plot):
            raise SystemExit(f"--plot: no file {plot}")
        metrics.plot(plot)
        sys.exit(0)
    if (completions or translate_from or chat) and not benchmark:
        raise SystemExit("--completions, --translate_from and --chat go with --benchmark=FILE")
    if benchmark:
        if completions and compare:
            raise SystemExit("--compare needs two checkpoints: --completions scores one set of completions")
        benchmark_main(snapshot(globals()))
        sys.exit(0)
    if n < 1 or max_tasks_per_pair < 0 or batch_size < 1 or show < 0 or budget < 0:
        raise SystemExit("need n >= 1, max_tasks_per_pair >= 0 (0: all), batch_size >= 1, show >= 0, budget >= 0")
    if budget and not compare:
        raise SystemExit("--budget needs --compare=CKPT: it measures the width of the paired interval")
    main(snapshot(globals()))
