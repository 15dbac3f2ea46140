"""
ablation.py: the paper's Table 4 in miniature. Trains its four rows from ONE shared SFT
checkpoint, several seeds each, evaluates every run with the same eval.py settings, and writes
a markdown table of pass@1 mean ± std over seeds, RL targets and held-out targets apart.

    python ablation.py                                          # 3 seeds, the preset of this machine
    python ablation.py --seeds=[1] --train_args="--rl_steps=20" --eval_args="--max_tasks_per_pair=5"
    python ablation.py --rows='["sft","rl_gepo","gepo_lam0"]'  # any config/ablation_<row>.py is a row

The rows (config/ablation_<row>.py):
    sft       SFT only: the shared checkpoint, no RL
    rl        + REINFORCE++ (on-policy RL, pref_loss = "none")
    rl_dpo    + REINFORCE++ + DPO (one winner and one loser IR per group)
    rl_gepo   + REINFORCE++ + GEPO (the full objective, eq. 10)
Every RL row starts from out_dir/sft/sft.pt (trained first if missing, or --sft_ckpt=PATH), so
the rows differ only by their loss and their seed (a row's config file is applied after
train_args, so it always wins over them). The SFT row has one checkpoint: it is
evaluated once per seed with that seed's sampling, so its spread is sampling noise alone.

Each job runs as a subprocess (`python train.py ...`, `python eval.py ...`), its output in
out_dir/logs/. A finished checkpoint is reused and a killed training resumes, so rerunning the
same command continues an interrupted ablation; ablation.md, .json and .png are rewritten after
every evaluation, so partial results are readable while it runs.
"""
import json
import os
import shlex
import subprocess
import sys
import time

import torch

from configurator import configure
from eval import ablation_summary, ablation_table, plot_ablation

# ----------------------------------------------------------------------------- configuration
out_dir = "out/ablation"
rows = ("sft", "rl", "rl_dpo", "rl_gepo")
seeds = (1, 2, 3)
sft_ckpt = ""            # an existing SFT checkpoint to share ("": train out_dir/sft/sft.pt first)
train_args = ""          # extra train.py overrides for every run, e.g. "--rl_steps=20" or "config/x.py"
eval_args = ""           # extra eval.py overrides for every evaluation, e.g. "--n=5 --max_tasks_per_pair=5"
echo_every = 30.0        # seconds between echoed lines of a running job (all of it is in the log)

LABELS = {"sft": "SFT only", "rl": "+ REINFORCE++", "rl_dpo": "+ REINFORCE++ + DPO",
          "rl_gepo": "+ REINFORCE++ + GEPO"}


def train_command(row, seed, run_dir, shared_sft, extra):
    """train.py for one run. The user's overrides come first, so that the row's config file and
    the run's own out_dir / seed / SFT checkpoint always win over them. --resume=True continues a
    killed run (and starts afresh when there is nothing to resume)."""
    command = [sys.executable, "train.py", *extra, f"config/ablation_{row}.py", f"--out_dir={run_dir}",
               f"--seed={seed}", "--resume=True"]
    return command + ([f"--sft_ckpt={shared_sft}"] if row != "sft" else [])


def eval_command(ckpt, json_path, seed, extra):
    """eval.py for one run; the run's seed is also its sampling seed."""
    return [sys.executable, "eval.py", *extra, f"--ckpt={ckpt}", f"--out_json={json_path}", f"--seed={seed}"]


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
                             command=eval_command(ckpt, json_path, seed, extra_eval)))
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
        for (r, _), path in sorted(evals.items()):
            if r == row:
                with open(path) as f:
                    results.append(json.load(f))
        if results:
            table_rows.append((LABELS.get(row, row), results))
    summary = ablation_summary(table_rows)
    with open(os.path.join(out_dir, "ablation.md"), "w") as f:
        f.write("\n".join(header) + "\n\n" + ablation_table(summary) + "\n")
    with open(os.path.join(out_dir, "ablation.json"), "w") as f:
        json.dump({"header": header, "rows": summary,
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
            "sampled with each seed's sampling seed: its spread is sampling noise alone."]


if __name__ == "__main__":
    command_line = shlex.join(["python", "ablation.py", *sys.argv[1:]])
    configure(globals(), sys.argv[1:])
    rows, seeds = tuple(rows), tuple(seeds)
    for row in rows:
        if not os.path.exists(f"config/ablation_{row}.py"):
            raise SystemExit(f"row {row!r} needs config/ablation_{row}.py (run ablation.py from the repository root)")
    if not seeds:
        raise SystemExit("--seeds needs at least one seed, e.g. --seeds=[1]")
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
