"""
metrics.py: what a run of train.py records, and its curves. Every logged step is a row of
out_dir/metrics.jsonl and a line on the screen: an SFT step's losses (the batch's, and the
validation losses on held-out pairs every few hundred steps), an OORL step's figures summed over
every rank in one all-reduce, each sum by its name. The training curves are plotted from that
file (eval.py --plot, and eval.py of a checkpoint whose run left one beside it).

    row, grad = oorl_row(step, lr, exp, stats, previous_grad, probe, group_size, kl_term, world_size)
    print(oorl_line(row, replayed=False, sampling_rounds=False), "|", progress("oorl", step, total, t_start, 0))
    plot("out/metrics.jsonl")    # -> out/metrics.png (needs matplotlib)

An OORL row's keys: reward (eq. 4), kl (eq. 1, per token; None without a KL term), entropy,
clip_frac, zero_adv_share (groups whose G rewards are equal), the GEPO loss and margin (eqs.
6-9), the probe on held-out IR groups, grad_cos (the cosine of successive steps' gradients: near
0 when a batch's gradient is mostly sampling noise), pass_rate per target language, and each
phase's seconds.
"""
import json
import os
import statistics
import time

import torch

import ddp
import reinforce
import tasks


def oorl_row(step, lr, exp, stats, previous_grad, probe, group_size, kl_term, world_size):
    """The row of one OORL step (exp: train.py's Experience; stats: what its update returned)
    over every rank's completions, and this step's gradient (the next step's previous_grad)."""
    out, learnt = exp.rollout, exp.rollout.mask[exp.learn]
    rewards = torch.tensor([v.reward for v in exp.verdicts])
    sampled = out.mask.clone()
    sampled[exp.replayed] = False  # a replayed success was not sampled now: it has no entropy of this policy's
    sums = dict(
        completions=len(exp.verdicts), reward=float(rewards.sum()), sampled_tokens=sampled.sum().item(),
        entropy=(out.entropy * sampled).sum().item(), truncated=float(out.truncated.sum()),
        zero_adv_groups=reinforce.zero_advantage_share(rewards, group_size) * len(exp.verdicts) / group_size,
        infra_errors=sum(v.status == "infra_error" for v in exp.verdicts),
        kl=sum(((b.logp_old - b.logp_ref) * b.mask).sum().item() for b in exp.batches),  # eq. 1's KL, k1
        learnt_tokens=learnt.sum().item(), loss_onp=stats["loss_onp"], clip_frac=stats["clip_frac"],
        loss_gepo=stats["loss_gepo"], gepo_margin=stats["gepo_margin"], gepo_winner_var=stats["gepo_winner_var"],
        groups=len(exp.groups), replayed=len(exp.replayed), gen_batches=exp.gen_batches)
    for lang in tasks.RL_TARGETS:
        sums[f"{lang} completions"] = sum(t["tgt_lang"] == lang for t in exp.tasks)
        sums[f"{lang} reward"] = sum(v.reward for t, v in zip(exp.tasks, exp.verdicts) if t["tgt_lang"] == lang)
    sums = dict(zip(sums, ddp.all_sum(torch.tensor(list(sums.values()), dtype=torch.float64)).tolist()))
    n, groups, grad = sums["completions"], max(sums["groups"], 1), stats.pop("grad")
    row = dict(step=step, stage="oorl", reward=sums["reward"] / n,
               kl=sums["kl"] / max(sums["learnt_tokens"], 1) if kl_term else None,
               loss_onp=sums["loss_onp"], loss_gepo=sums["loss_gepo"], lr=lr,
               entropy=sums["entropy"] / sums["sampled_tokens"], clip_frac=sums["clip_frac"],
               pass_rate={lang: sums[f"{lang} reward"] / sums[f"{lang} completions"]
                          for lang in tasks.RL_TARGETS if sums[f"{lang} completions"]},
               zero_adv_share=sums["zero_adv_groups"] / (n / group_size), truncated=sums["truncated"] / n,
               infra_errors=int(sums["infra_errors"]), gepo_margin=sums["gepo_margin"] / groups,
               gepo_winner_var=sums["gepo_winner_var"] / groups, grad_norm=stats["grad_norm"],
               grad_cos=(torch.nn.functional.cosine_similarity(grad, previous_grad, dim=0).item()
                         if previous_grad is not None else None),
               replayed=int(sums["replayed"]), gen_batches=sums["gen_batches"] / world_size,
               rollout_tok_per_s=sums["sampled_tokens"] / exp.times["time_rollout"], **exp.times,
               **{k: stats[k] for k in ("time_policy", "time_preference", "time_optimizer")}, **probe)
    row["time_update"] = (row["time_reference"] + row["time_pi_old"] + sum(row["time_policy"])
                          + row["time_preference"] + row["time_optimizer"])
    return row, grad


def oorl_line(row, replayed, sampling_rounds):
    """The step's line; with replayed / sampling_rounds (replay_successes, filter_groups on) their figures too."""
    kl = "-" if row["kl"] is None else f"{row['kl']:.4f}"
    grad_cos = "-" if row["grad_cos"] is None else f"{row['grad_cos']:.3f}"
    return (f"oorl step {row['step']} | reward {row['reward']:.3f} | kl {kl} | entropy {row['entropy']:.3f} | "
            f"clip {row['clip_frac']:.3f} | gepo {row['loss_gepo']:.4f} margin {row['gepo_margin']:.3f}"
            + (f" probe {row['probe_margin']:+.3f}" if "probe_margin" in row else "")
            + f" | zero-adv {row['zero_adv_share']:.2f} | grad cos {grad_cos}"
            + (f" | infra errors {row['infra_errors']}" if row["infra_errors"] else "")
            + (f" | replayed {row['replayed']}" if replayed else "")
            + (f" | sampling rounds {row['gen_batches']:.1f}" if sampling_rounds else "") + " | "
            + " ".join(f"{lang} {r:.2f}" for lang, r in row["pass_rate"].items())
            + f" | time rollout {row['time_rollout']:.1f}s reward after it {row['time_reward']:.1f}s"
            + f" update {row['time_update']:.1f}s")


def sft_line(row):
    """An SFT step's line: its batch's loss, and the validation losses where the row has them."""
    return (f"sft step {row['step']} | loss {row['loss']:.4f} | lr {row['lr']:.2e} | {row['tokens_per_s']:.0f} tok/s"
            + (f" | mfu {100 * row['mfu']:.1f}%" if row.get("mfu") is not None else "")
            + (f" | val loss {row['val_loss']:.4f}" if "val_loss" in row else "")
            + (f" ir {row['val_loss_ir']:.4f}" if row.get("val_loss_ir") is not None else ""))


def progress(stage, step, total, t_start, start):
    """Steps done of total and the time left, at the pace since t_start (when step `start` began)."""
    done = step + 1
    eta = (time.time() - t_start) / (done - start) * (total - done)
    return f"{stage} {done}/{total} | eta {eta / 60:.1f} min"


# ----------------------------------------------------------------------------- training curves

def pyplot():
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


def plot(metrics_path):
    """Training curves from train.py's metrics.jsonl -> a PNG next to it (returns its path)."""
    plt = pyplot()
    if plt is None:
        return None
    rows = {}
    with open(metrics_path) as f:
        for line in f:
            row = json.loads(line)
            rows[(row["stage"], row["step"])] = row  # a resumed run may log a step twice: keep the last
    sft = [r for (stage, _), r in sorted(rows.items()) if stage == "sft"]
    rl = [r for (stage, _), r in sorted(rows.items()) if stage == "oorl"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    panels = [("SFT loss", sft, ["loss"]), ("reward (eq. 4)", rl, ["reward"]),
              ("KL(pi_old || pi_ref) per token", rl, ["kl"]),
              ("GEPO margin: training groups, held-out probe", rl, ["gepo_margin", "probe_margin"]),
              ("entropy, clip fraction, cos of successive gradients", rl, ["entropy", "clip_frac", "grad_cos"])]
    for ax, (title, data, keys) in zip([axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1], axes[1, 2]], panels):
        for key in keys:
            points = [(r["step"], r[key]) for r in data if r.get(key) is not None]
            if not points:
                continue
            steps, values = zip(*points)
            if data is sft or key == "probe_margin":  # the probe runs every few steps on fixed groups
                ax.plot(steps, values, marker="o" if key == "probe_margin" else None, label=key)
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
