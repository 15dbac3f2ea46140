"""
ablation.py: the paper's Table 4 in miniature. Trains its four rows from ONE shared SFT
checkpoint, several seeds each, evaluates every run with the same eval.py settings, and writes
a markdown table: pass@1 mean ± std over seeds, RL targets and held-out targets apart, each RL
row's IR probe against the shared SFT model (what its preference loss taught it), and the
differences that the paper's claim rests on (each RL row minus SFT, GEPO minus DPO, GEPO minus RL
alone) with their 95% intervals, and a chart.

    python ablation.py                                          # 3 seeds, the preset of this machine
    python ablation.py --seeds=[1] --train_args="--rl_steps=20" --eval_args="--max_tasks_per_pair=5"
    python ablation.py --rows='["sft","rl_gepo","gepo_lam0"]'  # any config/ablation_<row>.py is a row
    python ablation.py --rows='["sft","rl_gepo","grpo"]' --comparisons='[["grpo","rl_gepo"]]'

The rows (config/ablation_<row>.py):
    sft       SFT only: the shared checkpoint, no RL
    rl        + REINFORCE++ (on-policy RL, pref_loss = "none")
    rl_dpo    + REINFORCE++ + DPO (one winner and one loser IR per group, drawn afresh each step)
    rl_gepo   + REINFORCE++ + GEPO (the full objective, eq. 10)
Every RL row starts from out_dir/sft/sft.pt (trained first if missing, or --sft_ckpt=PATH), so
the rows of one seed differ only by their loss: the same weights at the start, the same prompts
at every step (train.py draws the IR groups with a generator of their own), so many of their
programs are the same and are run once (reward.stored_verdicts). A row's config file is applied
after train_args, so it always wins over them. The SFT row has one checkpoint: it is
evaluated once per seed with that seed's sampling, so its spread is sampling noise alone.

Each job runs as a subprocess (`python train.py ...`, `python eval.py ...`), its output in
out_dir/logs/. A finished checkpoint is reused and a killed training resumes, so rerunning the
same command continues an interrupted ablation; ablation.md, .json and .png are rewritten after
every evaluation, so partial results are readable while it runs.

Two sources of variance, two intervals for each difference:
  - paired over tasks: seed s of one row and seed s of the other are evaluated on the same tasks with
    the same sampling seed; the per-task differences, averaged over the seeds, give stats.estimate's
    interval. It says whether THESE trained models differ, not whether another training seed would.
  - over seeds: the per-seed differences of the overall pass@1, mean ± std and a Student-t
    interval. It includes the training noise, and is what "row A beats row B" needs.
`seeds_to_resolve` turns the measured variances into how many seeds (at how many tasks) would
make a difference of a given size resolvable.
"""
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time

import torch

from configurator import configure
import tasks
from metrics import pyplot
from stats import Z95, estimate, pass_at_k

# ----------------------------------------------------------------------------- configuration
out_dir = "out/ablation"
rows = ("sft", "rl", "rl_dpo", "rl_gepo")
seeds = (1, 2, 3)
sft_ckpt = ""            # an existing SFT checkpoint to share ("": train out_dir/sft/sft.pt first)
train_args = ""          # extra train.py overrides for every run, e.g. "--rl_steps=20" or "config/x.py"
eval_args = ""           # extra eval.py overrides for every evaluation, e.g. "--n=5 --max_tasks_per_pair=5"
comparisons = (("rl_gepo", "rl_dpo"), ("rl_gepo", "rl"))  # (a, b): a - b, besides every RL row - SFT
echo_every = 30.0        # seconds between echoed lines of a running job (all of it is in the log)

LABELS = {"sft": "SFT only", "rl": "+ REINFORCE++", "rl_dpo": "+ REINFORCE++ + DPO",
          "rl_gepo": "+ REINFORCE++ + GEPO"}
# the paper's Table 4 (MultiPL-E pass@1): + REINFORCE++ 73.60, + DPO 73.48, + GEPO 76.31
PAPER_DIFFERENCES = {("rl_gepo", "rl_dpo"): 0.7631 - 0.7348, ("rl_gepo", "rl"): 0.7631 - 0.7360}
GROUPS = (("rl", "RL targets"), ("heldout", "held-out"))
# Student's t, 97.5% quantile, for 1..30 degrees of freedom (beyond: the Cornish-Fisher expansion)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df):
    return T975[df - 1] if df <= len(T975) else Z95 + (Z95 ** 3 + Z95) / (4 * df)


# ----------------------------------------------------------------------------- the table

def pass1(result, group):
    """A result's pass@1 of a group ("rl", "heldout", or "target <lang>"); None if it has none."""
    figure = result["groups"].get(group)
    return None if figure is None else figure["pass@1"]


def over_seeds(values):
    """{"mean", "std", "ci95"} of per-seed values: the t interval needs 2 seeds (else [None, None])."""
    if len(values) < 2:
        return {"mean": values[0] if values else None, "std": None, "ci95": [None, None]}
    mean, std = statistics.fmean(values), statistics.stdev(values)
    half = t975(len(values) - 1) * std / math.sqrt(len(values))
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def paired_over_tasks(a_results, b_results, group):
    """(difference, ci95, eval variance of one seed's difference) of pass@1 a - b in a group,
    paired over tasks: seeds matched in order, each task's difference averaged over the seeds."""
    targets = dict((("rl", tasks.RL_TARGETS), ("heldout", tasks.HELDOUT_TARGETS)))[group]
    per_pair, one_seed_vars = {}, []
    for a, b in zip(a_results, b_results):
        n = a["settings"]["n"]
        one_seed = {}
        for pair, by_task in a["counts"].items():
            if pair.split("->")[1] in targets and pair in b["counts"]:
                one_seed[pair] = {t: pass_at_k(n, c, 1) - pass_at_k(n, b["counts"][pair][t], 1)
                                  for t, c in by_task.items() if t in b["counts"][pair]}
        for pair, diffs in one_seed.items():
            per_pair.setdefault(pair, []).append(diffs)
        lo, hi = estimate({p: list(d.values()) for p, d in one_seed.items()}, -1.0, 1.0)[1]
        if lo is not None:
            one_seed_vars.append(((hi - lo) / (2 * Z95)) ** 2)
    pooled = {pair: [statistics.fmean(seed[t] for seed in seeds) for t in seeds[0] if all(t in s for s in seeds)]
              for pair, seeds in per_pair.items()}
    value, ci = estimate(pooled, -1.0, 1.0)
    return value, ci, statistics.fmean(one_seed_vars) if one_seed_vars else None


def difference(label, a_results, b_results):
    """One row of the differences table: per group, paired over tasks and over seeds."""
    row = {"label": label, "seeds": min(len(a_results), len(b_results))}
    for group, _ in GROUPS:
        value, ci, eval_var = paired_over_tasks(a_results, b_results, group)
        per_seed = [pass1(a, group) - pass1(b, group) for a, b in zip(a_results, b_results)]
        row[group] = {"paired": {"pass@1": value, "ci95": ci}, "per_seed": per_seed,
                      "over_seeds": over_seeds(per_seed), "eval_var": eval_var}
    return row


def seeds_to_resolve(difference, seed_var, eval_var, task_factor=1.0, max_seeds=1000):
    """The fewest training seeds whose t interval of the mean difference excludes 0 when the true
    difference is `difference`: t_{s-1} sqrt(var / s) < |difference|, where one seed's difference
    has variance var = train_var + eval_var / task_factor (train_var = seed_var - eval_var: what
    training adds to the evaluation's own noise; task_factor: how many times the tasks evaluated).
    None if even max_seeds would not."""
    train_var = max(0.0, seed_var - eval_var)
    var = train_var + eval_var / task_factor
    for seeds in range(2, max_seeds + 1):
        if t975(seeds - 1) * math.sqrt(var / seeds) < abs(difference):
            return seeds
    return None


def summarize_rows(rows, pairs=None):
    """rows: [(row name, [eval result per seed])] -> {"rows": per row pass@1 per seed, "differences"}:
    each RL row minus SFT, then a minus b for the (a, b) in pairs (default: the comparisons
    setting) that both ran."""
    results = dict(rows)
    summary = []
    for name, row_results in rows:
        per_target = {t: [v for v in (pass1(r, f"target {t}") for r in row_results) if v is not None]
                      for t in tasks.RL_TARGETS + tasks.HELDOUT_TARGETS}
        summary.append(dict(row=name, label=LABELS.get(name, name), seeds=len(row_results),
                            rl=[pass1(r, "rl") for r in row_results],
                            heldout=[pass1(r, "heldout") for r in row_results], per_target=per_target,
                            probe=[r["ir_probe"]["margin"] for r in row_results if r.get("ir_probe")],
                            probe_positive=[r["ir_probe"]["positive_share"] for r in row_results if r.get("ir_probe")]))
    differences = [difference(f"{LABELS.get(name, name)} − SFT", results[name], results["sft"])
                   for name, _ in rows if name != "sft" and "sft" in results]
    for a, b in comparisons if pairs is None else pairs:
        if a in results and b in results:
            row = difference(f"{LABELS.get(a, a)} − {LABELS.get(b, b)}", results[a], results[b])
            differences.append(dict(row, paper=PAPER_DIFFERENCES[(a, b)]) if (a, b) in PAPER_DIFFERENCES else row)
    return {"rows": summary, "differences": differences}


def points(value, signed=False):
    return "-" if value is None else f"{100 * value:{'+' if signed else ''}.1f}"


def mean_std(values):
    """'mean ± std' in percent over seeds (sample std); the mean alone for a single seed."""
    if not values:
        return "-"
    if len(values) == 1:
        return points(values[0])
    return f"{points(statistics.fmean(values))} ± {points(statistics.stdev(values))}"


def probe_text(row):
    """The IR probe against the shared SFT model, mean ± std over seeds (beta-scaled nats), and
    the mean share of held-out groups where it is positive; "-" for the SFT row itself."""
    margins, shares = row.get("probe", []), row.get("probe_positive", [])
    if not margins:
        return "-"
    spread = f" ± {statistics.stdev(margins):.3f}" if len(margins) > 1 else ""
    return f"{statistics.fmean(margins):+.3f}{spread} ({100 * statistics.fmean(shares):.0f}%)"


def interval(ci):
    return "-" if ci[0] is None else f"[{points(ci[0], True)}, {points(ci[1], True)}]"


def ablation_table(summary):
    """Markdown: pass@1 (%) per row, the differences with both intervals, and per target."""
    lines = ["| Method | seeds | RL targets pass@1 | held-out pass@1 | IR probe margin (positive share) |",
             "|---|---|---|---|---|"]
    lines += [f"| {row['label']} | {row['seeds']} | {mean_std(row['rl'])} | {mean_std(row['heldout'])} | "
              f"{probe_text(row)} |" for row in summary["rows"]]
    if summary["differences"]:
        lines += ["", "Differences in pass@1 (points): paired over tasks [95% interval] | over seeds mean ± std "
                  "[95% t interval]", "",
                  "| Difference | seeds | RL targets, paired | RL targets, over seeds | held-out, paired | "
                  "held-out, over seeds |", "|---|---|---|---|---|---|"]
        for d in summary["differences"]:
            cells = []
            for group, _ in GROUPS:
                p, s = d[group]["paired"], d[group]["over_seeds"]
                seeds_text = points(s["mean"], True) + ("" if s["std"] is None else f" ± {points(s['std'])} {interval(s['ci95'])}")
                cells += [f"{points(p['pass@1'], True)} {interval(p['ci95'])}", seeds_text]
            lines.append(f"| {d['label']} | {d['seeds']} | " + " | ".join(cells) + " |")
    targets = tasks.RL_TARGETS + tasks.HELDOUT_TARGETS
    lines += ["", "pass@1 (%) per target language (mean over the source languages); "
              f"held-out: {', '.join(tasks.HELDOUT_TARGETS)}", "",
              "| Method | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    lines += [f"| {row['label']} | " + " | ".join(mean_std(row["per_target"][t]) for t in targets) + " |"
              for row in summary["rows"]]
    return "\n".join(lines)


def resolution_notes(summary):
    """For each difference over seeds: how many seeds would resolve it, at these and at 4x the
    tasks; for GEPO against DPO and against RL alone, also how many would resolve a difference of
    the size the paper reports, with the spread measured here."""
    lines = []
    for d in summary["differences"]:
        s, eval_var = d["rl"]["over_seeds"], d["rl"]["eval_var"]
        if s["std"] is None or eval_var is None:
            continue
        spread = f"seed std {points(s['std'])}, of which the evaluation's own {points(math.sqrt(eval_var))}"
        sizes = ([("a true difference of", s["mean"])] if s["mean"] else []) + \
                ([("the paper's difference,", d["paper"])] if "paper" in d else [])
        for what, size in sizes:
            now, more_tasks = (seeds_to_resolve(size, s["std"] ** 2, eval_var, f) for f in (1.0, 4.0))
            lines.append(f"- {d['label']} (RL targets): {what} {points(size, True)} points with this spread ({spread}) "
                         f"needs {now or '> 1000'} seeds to exclude 0 at 95%, or {more_tasks or '> 1000'} with 4x the tasks.")
    return "\n".join(lines)


def plot_ablation(summary, png):
    """Left: mean pass@1 over seeds (error bars: std, dots: seeds). Right: the differences (RL
    targets), paired-over-tasks 95% intervals as error bars, dots: the per-seed differences."""
    plt = pyplot()
    if plt is None:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5))
    width = 0.38
    rows = summary["rows"]
    for j, (key, name) in enumerate(GROUPS):
        xs = [i + (j - 0.5) * width for i in range(len(rows))]
        values = [[100 * v for v in row[key]] for row in rows]
        means = [statistics.fmean(v) if v else 0.0 for v in values]
        stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        left.bar(xs, means, width, yerr=stds, capsize=4, label=name)
        for x, v in zip(xs, values):
            left.scatter([x] * len(v), v, color="black", s=10, zorder=3)
    left.set_xticks(range(len(rows)), [row["label"] for row in rows], fontsize=8)
    left.set_ylabel("pass@1 (%)")
    left.set_title("pass@1: mean over seeds, error bars = std")
    left.legend()
    for i, d in enumerate(summary["differences"]):
        p = d["rl"]["paired"]
        if p["pass@1"] is not None and p["ci95"][0] is not None:
            right.errorbar([i], [100 * p["pass@1"]], yerr=[[100 * (p["pass@1"] - p["ci95"][0])],
                                                           [100 * (p["ci95"][1] - p["pass@1"])]], fmt="o", capsize=5)
        right.scatter([i] * len(d["rl"]["per_seed"]), [100 * v for v in d["rl"]["per_seed"]], color="black", s=10)
    right.axhline(0, color="grey", lw=0.8)
    right.set_xticks(range(len(summary["differences"])), [d["label"] for d in summary["differences"]],
                     fontsize=7, rotation=15)
    right.set_ylabel("difference in pass@1, RL targets (points)")
    right.set_title("differences: paired-over-tasks 95% interval, dots = seeds")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    print(f"wrote {png}")
    return png


def train_command(row, seed, run_dir, shared_sft, extra):
    """train.py for one run. The user's overrides come first, so that the row's config file and
    the run's own out_dir / seed / SFT checkpoint always win over them. --resume=True continues a
    killed run (and starts afresh when there is nothing to resume)."""
    command = [sys.executable, "train.py", *extra, f"config/ablation_{row}.py", f"--out_dir={run_dir}",
               f"--seed={seed}", "--resume=True"]
    return command + ([f"--sft_ckpt={shared_sft}"] if row != "sft" else [])


def eval_command(ckpt, json_path, seed, extra, reference=None):
    """eval.py for one run; the run's seed is also its sampling seed. With a reference (the shared
    SFT model), the result also holds the IR probe: what the run's preference loss taught it."""
    return [sys.executable, "eval.py", *extra, f"--ckpt={ckpt}", f"--out_json={json_path}", f"--seed={seed}"] + \
        ([f"--ref_ckpt={reference}"] if reference else [])


def plan(rows, seeds, out_dir, shared_sft, train_sft, extra_train, extra_eval):
    """The jobs in order, dicts of kind ("sft", "train" or "eval"), row, seed, command and output
    (the file the job makes): the shared SFT model first, then seed by seed each row, an RL row
    trained then evaluated, the SFT row evaluated with that seed's sampling."""
    jobs = []
    if train_sft:
        jobs.append(dict(kind="sft", row="sft", seed=seeds[0], output=shared_sft,
                         command=train_command("sft", seeds[0], os.path.dirname(shared_sft), None, extra_train)))
    for seed in seeds:
        for row in rows:
            if row == "sft":
                json_path = os.path.join(out_dir, "sft", f"sft.seed{seed}.eval.json")
                jobs.append(dict(kind="eval", row=row, seed=seed, output=json_path,
                                 command=eval_command(shared_sft, json_path, seed, extra_eval)))
                continue
            run_dir = os.path.join(out_dir, f"{row}_seed{seed}")
            ckpt, json_path = os.path.join(run_dir, "oorl.pt"), os.path.join(run_dir, "oorl.eval.json")
            jobs.append(dict(kind="train", row=row, seed=seed, output=ckpt,
                             command=train_command(row, seed, run_dir, shared_sft, extra_train)))
            jobs.append(dict(kind="eval", row=row, seed=seed, output=json_path,
                             command=eval_command(ckpt, json_path, seed, extra_eval, shared_sft)))
    return jobs


def run_job(command, log_path, name):
    """Run command, its output into log_path; echo a line of it every echo_every seconds (train.py
    and eval.py print their own ETA). A failure stops the ablation with the log's last lines."""
    print(f"  $ {shlex.join(command)}\n  log: {log_path}", flush=True)
    last_echo = time.time()
    with open(log_path, "a") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in process.stdout:
            log.write(line)
            if time.time() - last_echo > echo_every:
                print(f"  [{name}] {line.rstrip()}", flush=True)
                last_echo = time.time()
        process.wait()
    if process.returncode != 0:
        with open(log_path) as f:
            tail = f.readlines()[-20:]
        raise SystemExit(f"{name} failed (exit {process.returncode}); the end of {log_path}:\n{''.join(tail)}")


def write_results(evals, rows, header, out_dir):
    """ablation.md (the header and the tables), ablation.json (per-seed values) and ablation.png,
    from evals {(row, seed): path of its .eval.json}."""
    table_rows = []
    for row in rows:
        results = []
        for (r, _), path in sorted(evals.items()):  # in seed order: seed s of a row pairs with seed s of another
            if r == row:
                with open(path) as f:
                    results.append(json.load(f))
        if results:
            table_rows.append((row, results))
    summary = summarize_rows(table_rows)
    with open(os.path.join(out_dir, "ablation.md"), "w") as f:
        f.write("\n".join(header) + "\n\n" + ablation_table(summary) + "\n\n" + resolution_notes(summary) + "\n")
    with open(os.path.join(out_dir, "ablation.json"), "w") as f:
        json.dump({"header": header, **summary,
                   "evals": {f"{row} seed {seed}": path for (row, seed), path in sorted(evals.items())}}, f, indent=1)
    plot_ablation(summary, os.path.join(out_dir, "ablation.png"))


def header(command_line, machine, shared_sft, settings, wall_s, finished, reused):
    return ["# Ablation: the paper's Table 4 in miniature", "",
            f"Command: `{command_line}` on {machine}; wall time {wall_s / 60:.1f} min"
            f"{'' if finished else ' so far (still running)'}"
            f"{f' (not counting {reused} checkpoints reused from an earlier run)' if reused else ''}.",
            f"Shared SFT checkpoint: `{shared_sft}`; extra train.py overrides: `{train_args or 'none'}`.",
            f"Evaluation: split {settings['split']}, n={settings['n']}, T={settings['temperature']}, "
            f"{settings['max_tasks_per_pair'] or 'all'} tasks per pair, max_new_tokens={settings['max_new_tokens']}; "
            f"extra eval.py overrides: `{eval_args or 'none'}`.",
            "pass@1 in %, mean ± std over seeds (one seed: the value alone). The SFT row is one checkpoint "
            "sampled with each seed's sampling seed: its spread is sampling noise alone. A difference is "
            "resolved when its interval excludes 0: paired over tasks for these trained models, over seeds "
            "for the method."]


if __name__ == "__main__":
    command_line = shlex.join(["python", "ablation.py", *sys.argv[1:]])
    configure(globals(), sys.argv[1:])
    rows, seeds = tuple(rows), tuple(seeds)
    for row in rows:
        if not os.path.exists(f"config/ablation_{row}.py"):
            raise SystemExit(f"row {row!r} needs config/ablation_{row}.py (run ablation.py from the repository root)")
    if not seeds:
        raise SystemExit("--seeds needs at least one seed, e.g. --seeds=[1]")
    # a pair whose rows did not both run is left out of the table; a name that is no row is a typo
    if not all(isinstance(pair, (tuple, list)) and len(pair) == 2 and set(pair) <= set(rows) | set(LABELS)
               for pair in comparisons):
        raise SystemExit(f"--comparisons={comparisons!r}: give pairs of rows, e.g. '[[\"rl_gepo\", \"rl\"]]' "
                         f"(rows: {', '.join(rows)})")
    comparisons = tuple(tuple(pair) for pair in comparisons)
    if sft_ckpt and not os.path.exists(sft_ckpt):
        raise SystemExit(f"--sft_ckpt={sft_ckpt}: no such file")
    shared_sft = sft_ckpt or os.path.join(out_dir, "sft", "sft.pt")
    jobs = plan(rows, seeds, out_dir, shared_sft, not os.path.exists(shared_sft),
                shlex.split(train_args), shlex.split(eval_args))
    os.makedirs(os.path.join(out_dir, "logs"), exist_ok=True)
    machine = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    print(f"ablation: rows {', '.join(rows)} x seeds {', '.join(map(str, seeds))}: {len(jobs)} jobs on {machine}; "
          f"shared SFT checkpoint {shared_sft}")

    t_start, durations, evals, settings, reused = time.time(), {}, {}, None, 0
    for i, job in enumerate(jobs):
        name = f"{'eval' if job['kind'] == 'eval' else 'train'} {job['row']} seed {job['seed']}"
        # ETA from the mean duration of the finished jobs of each kind (unknown kinds: "+")
        remaining = [j["kind"] for j in jobs[i:]]
        known = [sum(durations[k]) / len(durations[k]) for k in remaining if k in durations]
        eta = f"eta {sum(known) / 60:.0f}{'+' if len(known) < len(remaining) else ''} min"
        print(f"[{i + 1}/{len(jobs)}] {name} | elapsed {(time.time() - t_start) / 60:.1f} min | {eta}", flush=True)
        os.makedirs(os.path.dirname(job["output"]), exist_ok=True)
        if job["kind"] != "eval" and os.path.exists(job["output"]):
            print(f"  reusing {job['output']} (delete it to train this run again)")
            reused += 1
            continue
        t0 = time.time()
        run_job(job["command"], os.path.join(out_dir, "logs", name.replace(" ", "_") + ".log"), name)
        durations.setdefault(job["kind"], []).append(time.time() - t0)
        if job["kind"] == "eval":
            evals[(job["row"], job["seed"])] = job["output"]
            with open(job["output"]) as f:
                settings = json.load(f)["settings"]
            lines = header(command_line, machine, shared_sft, settings, time.time() - t_start, False, reused)
            write_results(evals, rows, lines, out_dir)
    if settings is not None:
        lines = header(command_line, machine, shared_sft, settings, time.time() - t_start, True, reused)
        write_results(evals, rows, lines, out_dir)
    print(f"done in {(time.time() - t_start) / 60:.1f} min: {out_dir}/ablation.md\n")
    with open(os.path.join(out_dir, "ablation.md")) as f:
        print(f.read())
