"""
eval.py: how well does a checkpoint translate? pass@k per (source -> target) pair, RL targets and
held-out targets apart; two checkpoints side by side; training curves; the ablation table.

    python eval.py --ckpt=out/oorl.pt                         # -> out/oorl.eval.json
    python eval.py --ckpt=out/oorl.pt --compare=out/sft.pt    # both, and the difference per pair
    python eval.py --ckpt=out/oorl.pt --greedy=True           # greedy decoding: n = 1, temperature 0
    python eval.py --plot=out/metrics.jsonl                   # training curves -> out/metrics.png
    python eval.py --plot=out/ablation/ablation.json          # the ablation's bar chart -> .png

For every selected task of the split, n completions are sampled with the KV cache (rollout.py)
and each is run against the task's unit tests (reward.py): 1 if it is well formed, compiles and
passes every test, else 0 (eq. 4; a completion cut off at max_new_tokens gets 0). With c of the
n samples passing, pass@k is estimated without bias as 1 - C(n-c, k) / C(n, k) (Chen et al.
2021, the Codex paper), averaged over the tasks of a pair. An overall figure is the mean over
pairs, so that every (source -> target) pair weighs the same. The tasks are the first
max_tasks_per_pair of each pair in the split's file order: every checkpoint and every seed sees
the same tasks, so differences between checkpoints are paired, not luck of the draw.

Defaults: n = 10 samples at temperature 0.8 (a compromise between pass@1, best at low
temperature, and pass@10, best near 0.8 in the Codex paper) on 10 tasks per pair: 2 sources x
8 targets = 16 pairs (C, the GEPO source language, is not a target here), 160 tasks, 1600
programs. On 2 CPU cores that took 2.5 minutes for a CPU-preset model whose completions nearly
all compile (most of it compiling and running them; each batch prints where its time went) and
10 s for the smoke checkpoint, whose completions are not even well formed. --max_tasks_per_pair=0
takes the whole split; --split=val evaluates on the validation split.

The results go to <checkpoint without .pt>.eval.json next to the checkpoint and are reused when
the same checkpoint (same modification time) is evaluated again with the same settings.
"""
import json
import math
import os
import random
import statistics
import sys
import time
from contextlib import nullcontext

import torch

import reward
import tasks
from configurator import configure
from model import GPT, GPTConfig
from rollout import rollout

# ----------------------------------------------------------------------------- configuration
ckpt = "out/oorl.pt"
compare = ""             # a second checkpoint, evaluated with the same settings and shown side by side
out_json = ""            # where to write the results ("": the checkpoint's path with .eval.json)
data_dir = ""            # "": the data_dir the checkpoint was trained on
split = "test"           # "test" | "val" | "train"
n = 10                   # samples per task; pass@k is reported for the k in KS with k <= n
temperature = 0.8
top_k = None
top_p = None
greedy = False           # pass@1 of greedy decoding (temperature 0, n = 1)
max_new_tokens = 0       # 0: the checkpoint's own max_new_tokens
max_tasks_per_pair = 10  # the first tasks of each (source -> target) pair (0: every task of the split)
batch_size = 160         # completions decoded together (prompts per batch = batch_size // n)
seed = 1337
device = "auto"          # "cpu" | "cuda" | "auto"
reuse = True             # reuse an existing .eval.json of the same checkpoint and settings
plot = ""                # plot this file and exit: a metrics.jsonl (curves) or an ablation.json (bars)

KS = (1, 5, 10)
TARGET_GROUPS = (("RL targets", tasks.RL_TARGETS), ("held-out", tasks.HELDOUT_TARGETS))


# ----------------------------------------------------------------------------- pass@k

def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples of which c passed: 1 - C(n-c, k) / C(n, k), the chance that
    k samples drawn from the n without replacement include a passing one. Written as the product
    C(n-c, k) / C(n, k) = prod_{i=n-c+1..n} (1 - k / i), which never forms huge binomials."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every draw of k samples contains a passing one
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def summarize(counts, n_samples):
    """Per-pair and overall pass@k from counts {pair: [c per task]}, RL and held-out targets apart:
    the "pass@1", "pass@k", "pairs" and "heldout" entries of the .eval.json."""
    ks = [k for k in KS if k <= n_samples]
    groups = {}
    for name, targets in TARGET_GROUPS:
        pairs = {}
        for pair, cs in sorted(counts.items()):
            if pair.split("->")[1] in targets and cs:
                pairs[pair] = {f"pass@{k}": statistics.fmean(pass_at_k(n_samples, c, k) for c in cs) for k in ks}
                pairs[pair]["n_tasks"] = len(cs)
        overall = {str(k): statistics.fmean(p[f"pass@{k}"] for p in pairs.values()) if pairs else 0.0 for k in ks}
        # standard error of the overall pass@1 (a mean of per-pair means of per-task c/n): how far
        # another draw of tasks and samples could move it; differences well inside it are noise
        variances = [statistics.variance([c / n_samples for c in counts[pair]]) / len(counts[pair])
                     for pair in pairs if len(counts[pair]) > 1]
        se = math.sqrt(sum(variances)) / len(pairs) if pairs else 0.0
        groups[name] = {"pass@1": overall["1"], "pass@1_se": se, "pass@k": overall, "pairs": pairs}
    rl = groups["RL targets"]
    return {"pass@1": rl["pass@1"], "pass@1_se": rl["pass@1_se"], "pass@k": rl["pass@k"], "pairs": rl["pairs"],
            "heldout": groups["held-out"]}


# ----------------------------------------------------------------------------- sampling and scoring

def load_checkpoint(path, device):
    """A checkpoint written by train.py (sft.pt / oorl.pt): the model and the run's config."""
    if not os.path.exists(path):
        raise SystemExit(f"no checkpoint at {path}: train one with `python train.py` or pass --ckpt=PATH")
    checkpoint = torch.load(path, map_location=device, weights_only=False)
    if not {"model", "model_args", "config"} <= set(checkpoint):
        raise SystemExit(f"{path} is not a finished train.py checkpoint (sft.pt or oorl.pt, with model, "
                         f"model_args and config); ckpt.pt is the resumable training state")
    model = GPT(GPTConfig(**checkpoint["model_args"])).to(device)
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint["config"]


def select_tasks(all_tasks, per_pair, fits):
    """The first per_pair tasks (0: all) of every pair from a paper source language to an RL or
    held-out target, in file order, skipping prompts that leave no room for the completion."""
    targets = tasks.RL_TARGETS + tasks.HELDOUT_TARGETS
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
    if too_long:
        print(f"skipped {too_long} tasks whose prompt + max_new_tokens exceed the model's block_size")
    return by_pair


def resolve_settings(config, checkpoint_config):
    """The settings an evaluation depends on, with the checkpoint's defaults filled in."""
    greedy_run = config["greedy"]
    return dict(split=config["split"], n=1 if greedy_run else config["n"],
                temperature=0.0 if greedy_run else config["temperature"], greedy=greedy_run,
                top_k=config["top_k"], top_p=config["top_p"],
                max_new_tokens=config["max_new_tokens"] or checkpoint_config["max_new_tokens"],
                max_tasks_per_pair=config["max_tasks_per_pair"], seed=config["seed"],
                data_dir=config["data_dir"] or checkpoint_config["data_dir"])


def evaluate(ckpt_path, config, device):
    """Sample, score and summarize one checkpoint; returns the .eval.json dict."""
    model, checkpoint_config = load_checkpoint(ckpt_path, device)
    s = resolve_settings(config, checkpoint_config)
    split_path = os.path.join(s["data_dir"], f"tasks_{s['split']}.jsonl")
    if not os.path.exists(split_path):
        raise SystemExit(f"no {split_path}: run `python prepare.py --data_dir={s['data_dir']}` or pick "
                         f"--split=test|val|train and --data_dir=DIR")
    enc = tasks.load_tokenizer(s["data_dir"])
    with open(split_path) as f:
        split_tasks = [json.loads(line) for line in f]
    prompt_ids = {}

    def fits(task):
        prompt_ids[task["id"]] = enc.encode(task["prompt"], allowed_special="all")
        return len(prompt_ids[task["id"]]) + s["max_new_tokens"] <= model.config.block_size

    by_pair = select_tasks(split_tasks, s["max_tasks_per_pair"], fits)
    if not by_pair:
        raise SystemExit(f"{split_path} has no task from {tasks.SOURCE_LANGS} to an RL or held-out target")
    # shuffled (seeded) so that every batch mixes languages and the ETA is honest from the start
    order = [task for chosen in by_pair.values() for task in chosen]
    random.Random(s["seed"]).shuffle(order)
    generator = torch.Generator(device=device).manual_seed(s["seed"])
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else nullcontext()
    prompts_per_batch = max(1, config["batch_size"] // s["n"])
    n_batches = math.ceil(len(order) / prompts_per_batch)
    print(f"evaluating {ckpt_path}: {len(order)} tasks in {len(by_pair)} pairs x n={s['n']} samples "
          f"(T={s['temperature']}, max_new_tokens={s['max_new_tokens']}) on {s['split']}, {n_batches} batches")

    counts, statuses = {pair: [] for pair in by_pair}, {}
    t_start, t_sample, t_score = time.time(), 0.0, 0.0
    for b in range(n_batches):
        batch = order[b * prompts_per_batch:(b + 1) * prompts_per_batch]
        t0 = time.time()
        with autocast:
            out = rollout(model, [prompt_ids[t["id"]] for t in batch], s["n"], s["max_new_tokens"],
                          enc.eot_token, s["temperature"], s["top_k"], s["top_p"], generator)
        completions = [enc.decode(out.completion_ids(r)) for r in range(len(out.completions))]
        truncated = out.truncated.tolist()
        t1 = time.time()
        row_tasks = [t for t in batch for _ in range(s["n"])]
        verdicts = reward.score_details(completions, row_tasks, truncated=truncated)
        t2 = time.time()
        t_sample, t_score = t_sample + t1 - t0, t_score + t2 - t1
        for i, task in enumerate(batch):
            rows = verdicts[i * s["n"]:(i + 1) * s["n"]]
            counts[f"{task['src_lang']}->{task['tgt_lang']}"].append(sum(int(v.reward) for v in rows))
        for v, cut in zip(verdicts, truncated):
            kind = "truncated" if cut else v.status
            statuses[kind] = statuses.get(kind, 0) + 1
        elapsed = time.time() - t_start
        print(f"batch {b + 1}/{n_batches} | sampling {t1 - t0:.1f}s scoring {t2 - t1:.1f}s | "
              f"elapsed {elapsed / 60:.1f} min | eta {elapsed / (b + 1) * (n_batches - b - 1) / 60:.1f} min")

    result = summarize(counts, s["n"])
    result.update(split=s["split"], n=s["n"], temperature=s["temperature"], ckpt=ckpt_path,
                  settings=s, ckpt_mtime=os.path.getmtime(ckpt_path), statuses=statuses,
                  counts=counts, seconds=dict(sampling=t_sample, scoring=t_score, total=time.time() - t_start))
    return result


def default_json_path(ckpt_path):
    return os.path.splitext(ckpt_path)[0] + ".eval.json"


def evaluate_or_reuse(ckpt_path, json_path, config, device, allow_reuse):
    """Reuse json_path when it holds this checkpoint's results under the same settings; otherwise
    evaluate and write it (atomically: a killed run never leaves half a file behind)."""
    if allow_reuse and os.path.exists(json_path) and os.path.exists(ckpt_path):
        with open(json_path) as f:
            previous = json.load(f)
        checkpoint_config = torch.load(ckpt_path, map_location="cpu", weights_only=False)["config"]
        if (previous.get("settings") == resolve_settings(config, checkpoint_config)
                and previous.get("ckpt_mtime") == os.path.getmtime(ckpt_path)):
            print(f"reusing {json_path} (same checkpoint and settings; --reuse=False evaluates again)")
            return previous
    result = evaluate(ckpt_path, config, device)
    with open(json_path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(json_path + ".tmp", json_path)
    print(f"wrote {json_path}")
    return result


# ----------------------------------------------------------------------------- reports

def pass_matrix(result, k=1, title="", signed=False):
    """Sources x targets pass@k in percent, RL targets | held-out targets, with a mean row."""
    pairs = {**result["pairs"], **result["heldout"]["pairs"]}
    groups = [targets for _, targets in TARGET_GROUPS]
    key = f"pass@{k}"

    def cell(target, value):
        text = "-" if value is None else f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"
        return f"{text:>{max(7, len(target) + 2)}}"

    def row(label, value_of):
        return f"{label:<16}" + " |".join("".join(cell(t, value_of(t)) for t in targets) for targets in groups)

    def target_mean(t):
        values = [pairs[f"{src}->{t}"][key] for src in tasks.SOURCE_LANGS if f"{src}->{t}" in pairs]
        return statistics.fmean(values) if values else None

    header = "source \\ target"
    lines = [title, f"{header:<16}" + " |".join("".join(f"{t:>{max(7, len(t) + 2)}}" for t in targets)
                                               for targets in groups)]
    lines += [row(src, lambda t: pairs.get(f"{src}->{t}", {}).get(key)) for src in tasks.SOURCE_LANGS]
    lines.append(row("mean", target_mean))
    return "\n".join(line for line in lines if line)


def report(result):
    """The printed summary of one evaluation."""
    s = result["settings"]
    title = (f"pass@1 (%) of {result['ckpt']} on {s['split']} (n={s['n']}, T={s['temperature']}, "
             f"{s['max_tasks_per_pair'] or 'all'} tasks per pair)")
    lines = [pass_matrix(result, 1, title)]
    for name, group in (("RL targets", result), ("held-out", result["heldout"])):
        figures = [f"pass@1 {100 * group['pass@1']:.1f} (s.e. {100 * group['pass@1_se']:.1f})"]
        figures += [f"pass@{k} {100 * v:.1f}" for k, v in group["pass@k"].items() if k != "1"]
        lines.append(f"{name:>10}: " + "  ".join(figures))
    total = sum(result["statuses"].values())
    lines.append("outcomes: " + ", ".join(f"{kind} {100 * count / total:.0f}%" for kind, count in
                                         sorted(result["statuses"].items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)


def difference_report(a, b):
    """pass@1 of a minus b per pair (points), and overall."""
    diff = {"pairs": {}, "heldout": {"pairs": {}}}
    for where in (lambda r: r["pairs"], lambda r: r["heldout"]["pairs"]):
        for pair in where(a).keys() & where(b).keys():
            where(diff)[pair] = {"pass@1": where(a)[pair]["pass@1"] - where(b)[pair]["pass@1"]}
    lines = [pass_matrix(diff, 1, f"difference in pass@1 (points): {a['ckpt']} - {b['ckpt']}", signed=True)]
    for name, ga, gb in (("RL targets", a, b), ("held-out", a["heldout"], b["heldout"])):
        lines.append(f"{name:>10}: " + "  ".join(f"pass@{k} {100 * (ga['pass@k'][k] - gb['pass@k'][k]):+.1f}"
                                                 for k in ga["pass@k"] if k in gb["pass@k"]))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the ablation table

def ablation_summary(rows):
    """rows: [(label, [eval result, one per seed]), ...] -> [{label, seeds, rl, heldout, per_target}]
    with the per-seed pass@1 values (fractions); per_target averages a target over the sources."""
    summary = []
    for label, results in rows:
        per_target = {}
        for target in tasks.RL_TARGETS + tasks.HELDOUT_TARGETS:
            values = []
            for r in results:
                pairs = {**r["pairs"], **r["heldout"]["pairs"]}
                scores = [p["pass@1"] for pair, p in pairs.items() if pair.split("->")[1] == target]
                if scores:
                    values.append(statistics.fmean(scores))
            per_target[target] = values
        summary.append(dict(label=label, seeds=len(results), rl=[r["pass@1"] for r in results],
                            heldout=[r["heldout"]["pass@1"] for r in results], per_target=per_target))
    return summary


def mean_std(values):
    """'mean ± std' in percent over seeds (sample std); the mean alone for a single seed."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.fmean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def ablation_table(summary):
    """Markdown: pass@1 (%) mean ± std over seeds, RL targets and held-out targets, then per target."""
    lines = ["| Method | seeds | RL targets pass@1 | held-out pass@1 |", "|---|---|---|---|"]
    lines += [f"| {row['label']} | {row['seeds']} | {mean_std(row['rl'])} | {mean_std(row['heldout'])} |"
              for row in summary]
    targets = tasks.RL_TARGETS + tasks.HELDOUT_TARGETS
    lines += ["", "pass@1 (%) per target language (mean over the source languages); "
              f"held-out: {', '.join(tasks.HELDOUT_TARGETS)}", "",
              "| Method | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    lines += [f"| {row['label']} | " + " | ".join(mean_std(row["per_target"][t]) for t in targets) + " |"
              for row in summary]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots (matplotlib is optional)

def _pyplot():
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed, so no plot: `pip install matplotlib` to get one")
        return None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    return plt


def smooth(values, window=10):
    """Trailing moving average: per-step RL figures come from a few dozen completions and are noisy."""
    return [statistics.fmean(values[max(0, i - window + 1):i + 1]) for i in range(len(values))]


def plot_metrics(metrics_path):
    """Training curves from train.py's metrics.jsonl -> a PNG next to it (returns its path)."""
    plt = _pyplot()
    if plt is None:
        return None
    rows = {}
    with open(metrics_path) as f:
        for line in f:
            row = json.loads(line)
            rows[(row["stage"], row["step"])] = row  # a resumed run logs some steps twice: keep the last
    sft = [r for (stage, _), r in sorted(rows.items()) if stage == "sft"]
    rl = [r for (stage, _), r in sorted(rows.items()) if stage == "oorl"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    panels = [("SFT loss", sft, ["loss"]), ("reward (eq. 4)", rl, ["reward"]),
              ("KL(pi_old || pi_ref) per token", rl, ["kl"]), ("GEPO winner - loser margin", rl, ["gepo_margin"]),
              ("entropy, clip fraction, cos of successive gradients", rl, ["entropy", "clip_frac", "grad_cos"])]
    for ax, (title, data, keys) in zip([axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1], axes[1, 2]], panels):
        for key in keys:
            points = [(r["step"], r[key]) for r in data if r.get(key) is not None]
            if points:
                steps, values = zip(*points)
                if data is sft:
                    ax.plot(steps, values, label=key)
                else:  # the raw per-step values faintly, their moving average on top
                    line, = ax.plot(steps, smooth(list(values)), label=key)
                    ax.plot(steps, values, color=line.get_color(), alpha=0.25)
        ax.set_title(title)
        ax.set_xlabel("step")
        if len(keys) > 1 and ax.lines:
            ax.legend()
    ax = axes[0, 2]
    for lang in tasks.RL_TARGETS:  # a language is missing from steps that sampled none of its prompts
        points = [(r["step"], r["pass_rate"][lang]) for r in rl if lang in r.get("pass_rate", {})]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, smooth(list(values)), label=lang)
    ax.set_title("pass rate per target language")
    ax.set_xlabel("step")
    if ax.lines:
        ax.legend(fontsize=8)
    fig.suptitle(f"{metrics_path} (RL curves: moving average over 10 steps)")
    fig.tight_layout()
    png = os.path.splitext(metrics_path)[0] + ".png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    print(f"wrote {png}")
    return png


def plot_ablation(summary, png):
    """Bars of mean pass@1 over seeds (error bars: std, dots: single seeds), RL and held-out targets."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.38
    for j, (key, name) in enumerate((("rl", "RL targets"), ("heldout", "held-out targets"))):
        xs = [i + (j - 0.5) * width for i in range(len(summary))]
        values = [[100 * v for v in row[key]] for row in summary]
        means = [statistics.fmean(v) if v else 0.0 for v in values]
        stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        ax.bar(xs, means, width, yerr=stds, capsize=4, label=name)
        for x, v in zip(xs, values):
            ax.scatter([x] * len(v), v, color="black", s=10, zorder=3)
    ax.set_xticks(range(len(summary)), [row["label"] for row in summary])
    ax.set_ylabel("pass@1 (%)")
    ax.set_title("ablation (the paper's Table 4 in miniature): mean over seeds, error bars = std")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    print(f"wrote {png}")
    return png


def plot_file(path):
    """--plot: a metrics.jsonl gives training curves, an ablation.json (from ablation.py) a bar chart."""
    if not os.path.exists(path):
        raise SystemExit(f"--plot: no file {path}")
    if path.endswith(".jsonl"):
        return plot_metrics(path)
    with open(path) as f:
        data = json.load(f)
    if "rows" not in data:
        raise SystemExit(f"--plot: {path} is neither a metrics.jsonl nor an ablation.json (from ablation.py)")
    return plot_ablation(data["rows"], os.path.splitext(path)[0] + ".png")


# ----------------------------------------------------------------------------- main

if __name__ == "__main__":
    configure(globals(), sys.argv[1:])
    if plot:
        plot_file(plot)
        sys.exit(0)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if n < 1 or max_tasks_per_pair < 0 or batch_size < 1:
        raise SystemExit("need n >= 1, max_tasks_per_pair >= 0 (0: all) and batch_size >= 1")
    config = {k: v for k, v in globals().items()
              if not k.startswith("_") and isinstance(v, (int, float, bool, str, type(None)))}
    main = evaluate_or_reuse(ckpt, out_json or default_json_path(ckpt), config, device, reuse)
    print(report(main))
    if compare:
        other = evaluate_or_reuse(compare, default_json_path(compare), config, device, reuse)
        print(report(other))
        print(difference_report(main, other))
    metrics = os.path.join(os.path.dirname(ckpt), "metrics.jsonl")
    if os.path.exists(metrics):  # the training curves of the run that made this checkpoint
        plot_metrics(metrics)
