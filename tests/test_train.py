"""End-to-end tests of train.py on a tiny world: both stages run, log what they should, and a
run that stopped part-way resumes from its last checkpoint; bad settings, paths and checkpoints
fail within seconds with a message naming what is wrong, before any training."""
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "train.py")
SMOKE = os.path.join(ROOT, "config", "smoke.py")
TINY_DATA = ["--n_train=120", "--n_val=10", "--n_test=10", "--n_ir_groups=6", "--n_ir_groups_val=4",
             "--vocab_size=512"]


def run(*args, cwd=ROOT, ok=True, prefix=()):
    done = subprocess.run([sys.executable, *prefix, *args], cwd=cwd, capture_output=True, text=True)
    if ok:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data = tmp_path_factory.mktemp("train") / "data"
    run("prepare.py", f"--data_dir={data}", *TINY_DATA)
    return data


@pytest.fixture(scope="module")
def smoke_run(data_dir, tmp_path_factory):
    """A smoke run that stopped after 2 of its RL steps, as a killed run would (its last
    checkpoint: step 2); run from another directory than the project's."""
    out = tmp_path_factory.mktemp("smoke") / "out"
    run(TRAIN, SMOKE, f"--data_dir={data_dir}", f"--out_dir={out}", "--rl_steps=2", "--probe_interval=1",
        cwd=out.parent)
    return out


def metrics(out):
    with open(out / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_smoke_runs_both_stages_and_resumes(data_dir, smoke_run, tmp_path):
    out = tmp_path / "out"
    os.system(f"cp -r {smoke_run} {out}")
    assert (out / "sft.pt").exists() and (out / "oorl.pt").exists()
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 2
    rows = metrics(out)
    assert {r["stage"] for r in rows} == {"sft", "oorl"}
    rl_rows = [r for r in rows if r["stage"] == "oorl"]
    for key in ("step", "reward", "kl", "loss_onp", "loss_gepo", "pass_rate", "entropy", "clip_frac",
                "zero_adv_share", "gepo_margin", "gepo_winner_var", "time_rollout", "time_reward",
                "time_update", "rollout_tok_per_s", "grad_norm", "grad_cos", "probe_margin",
                "probe_positive_share"):
        assert key in rl_rows[0], key
    assert [r["step"] for r in rl_rows] == [0, 1]
    # the first step has no previous gradient to compare with; the second one has
    assert rl_rows[0]["grad_cos"] is None and -1.0 <= rl_rows[1]["grad_cos"] <= 1.0
    assert rl_rows[1]["grad_norm"] > 0
    # at the first step the policy is the SFT model: pi_old is the training forward's, so the KL is 0
    assert rl_rows[0]["kl"] == 0.0

    # a killed run logged step 2 before dying, after its last checkpoint: resuming replays it
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(dict(rl_rows[1], step=2)) + "\n")
    stdout = run(TRAIN, SMOKE, f"--data_dir={data_dir}", f"--out_dir={out}", "--rl_steps=4",
                 "--resume=True").stdout
    assert "resume: OORL from step 2" in stdout and "sft step" not in stdout  # SFT is not redone
    assert [r["step"] for r in metrics(out) if r["stage"] == "oorl"] == [0, 1, 2, 3]  # no duplicate rows
    checkpoint = torch.load(out / "ckpt.pt", weights_only=True)
    assert checkpoint["step"] == 4 and checkpoint["config"]["rl_steps"] == 4
    # every random state is a CPU tensor or plain data: a CUDA run resumes without moving them back
    assert all(t.device.type == "cpu" for t in checkpoint["generator"])
    assert isinstance(checkpoint["python_rng"], tuple)


def test_sft_logs_validation_losses_on_held_out_pairs(data_dir, tmp_path):
    """SFT rows carry val_loss (held-out translation pairs) and val_loss_ir (held-out C -> IR
    pairs) every sft_eval_interval steps and at the last step, and only there (0: the last alone)."""
    run(TRAIN, SMOKE, f"--data_dir={data_dir}", f"--out_dir={tmp_path}", "--sft_steps=12", "--rl_steps=0",
        "--sft_eval_interval=5", "--sft_eval_examples=16")
    rows = [r for r in metrics(tmp_path) if r["stage"] == "sft"]
    validated = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in validated] == [0, 5, 10, 11]
    assert all(0 < r["val_loss"] < 20 and 0 < r["val_loss_ir"] < 20 for r in validated)
    assert validated[-1]["val_loss"] < validated[0]["val_loss"]  # 12 steps from random weights learn something
    # validating draws no random number and changes no weight: the training losses are those of a
    # run that validates only at its last step
    run(TRAIN, SMOKE, f"--data_dir={data_dir}", f"--out_dir={tmp_path}/once", "--sft_steps=12", "--rl_steps=0",
        "--sft_eval_interval=0", "--sft_eval_examples=16")
    once = [r for r in metrics(tmp_path / "once") if r["stage"] == "sft"]
    assert [r["step"] for r in once if "val_loss" in r] == [11]
    assert [(r["step"], r["loss"]) for r in once] == [(r["step"], r["loss"]) for r in rows if r["step"] in (0, 10, 11)]


@pytest.mark.slow
def test_resume_refuses_a_changed_model_shape(data_dir, smoke_run):
    done = run(TRAIN, SMOKE, f"--data_dir={data_dir}", f"--out_dir={smoke_run}", "--rl_steps=4",
               "--resume=True", "--n_layer=3", ok=False)
    assert done.returncode != 0 and "n_layer (saved 2, now 3)" in done.stderr


@pytest.mark.slow
def test_bf16_autocast_starts_each_step_at_ratio_one_and_zero_kl(data_dir, tmp_path):
    """Under bf16 autocast the rollout's log-probs (a KV-cached decode of bf16 logits) differ from
    the training forward's; pi_old is recomputed, so at the start of a step with policy =
    reference the KL is exactly 0 (and the ratio exactly 1)."""
    out = tmp_path / "out"
    run(TRAIN, SMOKE, f"--data_dir={data_dir}", f"--out_dir={out}", "--sft_steps=4", "--rl_steps=1",
        "--dtype=bfloat16", "--ppo_epochs=1")
    (row,) = [r for r in metrics(out) if r["stage"] == "oorl"]
    assert row["kl"] == 0.0 and row["clip_frac"] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("pref_loss, loss_function", [("gepo", "gepo_loss"), ("dpo", "dpo_loss")])
def test_the_preference_loss_enters_once_per_rl_step(data_dir, smoke_run, tmp_path, pref_loss, loss_function):
    """Eq. 10 weighs the preference loss by w_gepo once per RL step, whatever ppo_epochs is:
    the policy's preference loss (the one with a gradient) is computed rl_steps times."""
    count = ["-c", f"import atexit, runpy, sys, gepo, torch; calls = []; original = gepo.{loss_function}; "
                   f"gepo.{loss_function} = lambda *a, **k: (calls.append(torch.is_grad_enabled()), original(*a, **k))[1]; "
                   "atexit.register(lambda: print('policy preference losses:', sum(calls))); "
                   "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"]
    done = run(TRAIN, SMOKE, f"--data_dir={data_dir}", f"--out_dir={tmp_path}", f"--sft_ckpt={smoke_run}/sft.pt",
               "--rl_steps=2", "--ppo_epochs=3", f"--pref_loss={pref_loss}", "--probe_interval=0", prefix=count)
    assert "policy preference losses: 2\n" in done.stdout


@pytest.mark.slow
def test_prompts_are_filtered_with_the_loaded_models_block_size(data_dir, smoke_run, tmp_path):
    """An sft.pt of block 512 used with a larger block_size setting: prompts are chosen for the
    model that reads them, so the run fails now and clearly instead of asserting mid-run."""
    done = run(TRAIN, SMOKE, f"--data_dir={data_dir}", f"--out_dir={tmp_path}", f"--sft_ckpt={smoke_run}/sft.pt",
               "--block_size=4096", "--max_new_tokens=500", ok=False)
    assert done.returncode != 0 and "prompts_per_step" in done.stderr and "block of 512 tokens" in done.stderr


def test_preset_follows_the_device_the_run_uses(data_dir, tmp_path):
    """--device=cpu on a machine with a GPU trains the CPU preset (torch.cuda.is_available is
    made to say True here)."""
    fake_gpu = ["-c", "import runpy, sys, torch; torch.cuda.is_available = lambda: True; "
                      "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"]
    done = run(TRAIN, "--device=cpu", f"--data_dir={data_dir}", f"--out_dir={tmp_path}", "--sft_steps=0",
               "--rl_steps=0", prefix=fake_gpu)
    assert "preset: cpu" in done.stdout


@pytest.mark.parametrize("setting, key", [
    ("--ppo_epochs=0", "ppo_epochs"), ("--temperature=0", "temperature"), ("--top_k=abc", "top_k"),
    ("--prompts_per_step=100000", "prompts_per_step"), ("--adv_estimator=grpo --group_size=1", "group_size"),
    ("--top_p=1.5", "top_p"), ("--n_embd=130", "n_embd"), ("--init_from=/no/such/dir", "init_from"),
    ("--dtype=float16", "dtype"), ("--rl_stpes=3", "rl_stpes"), ("--epsilon_high=0", "epsilon_high"),
    ("--max_num_gen_batches=0", "max_num_gen_batches"), ("--filter_groups=1", "filter_groups"),
    ("--n_head=0", "n_head"), ("--device=foo", "device"), ("--preset=pretrained", "preset"),
])
def test_bad_settings_fail_before_any_work(data_dir, tmp_path, setting, key):
    done = run(TRAIN, f"--data_dir={data_dir}", f"--out_dir={tmp_path}", *setting.split(), ok=False)
    assert done.returncode != 0 and key in done.stderr, done.stderr[-2000:]
    assert "sft step" not in done.stdout and not (tmp_path / "metrics.jsonl").exists()


def test_every_key_train_py_leaves_to_the_preset_is_set_by_each_preset():
    """A key marked "preset" in train.py holds a placeholder that no run may use: each preset that
    uses it sets it (config/pretrained.py takes the model's shape from the pretrained model)."""
    import re
    from configurator import read_file
    with open(TRAIN) as f:
        marked = re.findall(r"^(\w+) = .*# preset\b", f.read(), flags=re.M)
    shape = {"n_layer", "n_head", "n_embd", "block_size"}
    assert shape < set(marked) and {"rl_steps", "prompts_per_step", "group_size"} < set(marked)
    for name in ("cpu", "gpu", "pretrained"):
        preset = read_file(os.path.join(ROOT, "config", f"{name}.py"))
        for key in marked:
            assert key in preset or (name == "pretrained" and key in shape), (name, key)


def test_a_missing_data_dir_is_an_error_not_a_new_dataset(tmp_path):
    done = run(TRAIN, f"--data_dir={tmp_path}/dat", f"--out_dir={tmp_path}/out", ok=False)
    assert done.returncode != 0 and f"no data in {tmp_path}/dat" in done.stderr
    assert not (tmp_path / "dat").exists()


class _Exploit:
    """Unpickling this calls os.system: a checkpoint that runs code when loaded unsafely."""
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


@pytest.mark.parametrize("content", ["random", "exploit"])
def test_a_bad_checkpoint_is_one_clear_line_and_runs_no_code(data_dir, tmp_path, content):
    ckpt = tmp_path / "sft.pt"
    marker = tmp_path / "pwned"
    if content == "random":
        ckpt.write_bytes(os.urandom(4096))
    else:
        torch.save({"model": _Exploit(marker)}, ckpt, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    done = run(TRAIN, f"--data_dir={data_dir}", f"--out_dir={tmp_path}/out", f"--sft_ckpt={ckpt}", ok=False)
    assert done.returncode != 0 and str(ckpt) in done.stderr and "Traceback" not in done.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_init_from_a_local_pretrained_gpt2_end_to_end(data_dir, tmp_path):
    """A tiny random GPT-2 and its own tokenizer saved as a Hugging Face directory: both stages
    run on it with its tokenizer, and eval.py evaluates the result with the tokenizer it records."""
    from test_pretrained import make_tiny_gpt2
    model_dir = make_tiny_gpt2(tmp_path / "gpt2")
    out = tmp_path / "out"
    stdout = run(TRAIN, SMOKE, f"--data_dir={data_dir}", f"--out_dir={out}", f"--init_from={model_dir}",
                 "--sft_steps=3", "--rl_steps=1").stdout
    assert "preset: pretrained" in stdout
    checkpoint = torch.load(out / "oorl.pt", weights_only=True)
    assert checkpoint["tokenizer"]["kind"] == "huggingface" and checkpoint["model_args"]["block_size"] == 1024
    run("eval.py", f"--ckpt={out}/oorl.pt", "--max_tasks_per_pair=1", "--n=1", f"--out_json={tmp_path}/e.json",
        "--probe_groups=")
    result = json.load(open(tmp_path / "e.json"))
    assert result["settings"]["n"] == 1 and sum(result["statuses"].values()) == len(result["counts"])


def test_a_directory_that_is_not_a_checkpoint_is_refused(data_dir, tmp_path):
    done = run(TRAIN, f"--data_dir={data_dir}", f"--out_dir={tmp_path}/out", f"--init_from={tmp_path}", ok=False)
    assert done.returncode != 0 and str(tmp_path) in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_infrastructure_failures_are_left_out_of_the_advantages_and_a_mostly_failed_batch_stops(
        data_dir, smoke_run, tmp_path):
    """A verdict of "infra_error" (the sandbox or a toolchain failed, not the program) is counted
    and its completion is not learnt from; a step where most programs could not be judged stops
    the run with a message instead of training on it."""
    inject = ["-c", "import atexit, dataclasses, runpy, sys, reinforce, reward; share = float(sys.argv.pop(1)); "
                    "original = reward.score_details; seen = []\n"
                    "def score(completions, tasks, **kw):\n"
                    "    verdicts = original(completions, tasks, **kw)\n"
                    "    broken = int(share * len(verdicts))\n"
                    "    return [dataclasses.replace(v, status='infra_error', reward=0.0) if i < broken else v "
                    "for i, v in enumerate(verdicts)]\n"
                    "reward.score_details = score; advantages = reinforce.reinforce_pp_advantages\n"
                    "reinforce.reinforce_pp_advantages = lambda r, *a: (seen.append(len(r)), advantages(r, *a))[1]\n"
                    "atexit.register(lambda: print('rows learnt from:', seen))\n"
                    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"]
    common = [TRAIN, SMOKE, f"--data_dir={data_dir}", f"--sft_ckpt={smoke_run}/sft.pt", "--rl_steps=1",
              "--probe_interval=0", "--prompts_per_step=2", "--group_size=4"]
    done = run("0.25", *common, f"--out_dir={tmp_path}/a", prefix=inject)
    assert "rows learnt from: [6]" in done.stdout  # 8 completions, 2 of them infrastructure failures
    (row,) = [r for r in metrics(tmp_path / "a") if r["stage"] == "oorl"]
    assert row["infra_errors"] == 2
    done = run("0.75", *common, f"--out_dir={tmp_path}/b", prefix=inject, ok=False)
    assert done.returncode != 0 and "6 of 8 programs could not be judged" in done.stderr


@pytest.mark.slow
def test_scoring_while_decoding_judges_as_scoring_after_it(data_dir, smoke_run, tmp_path):
    """score_while_decoding=True hands each row to the reward as it ends (rollout's on_end,
    reward.Scorer), in several batches: the same samples get the same verdicts as when the whole
    rollout is scored after decoding, and the step the same figures. (The smoke model's programs
    are malformed; test_reward's Scorer test judges real ones, passing and failing.)"""
    record = ["-c", "import atexit, json, runpy, sys, reward; original = reward.score_details; seen = []\n"
                    "def score(completions, tasks, **kw):\n"
                    "    verdicts = original(completions, tasks, **kw)\n"
                    "    seen.append([[c, v.status] for c, v in zip(completions, verdicts)])\n"
                    "    return verdicts\n"
                    "reward.score_details = score\n"
                    "atexit.register(lambda: print('verdicts:', json.dumps(seen)))\n"
                    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"]
    verdicts, rows = {}, {}
    for overlap in (True, False):
        done = run(TRAIN, SMOKE, f"--data_dir={data_dir}", f"--sft_ckpt={smoke_run}/sft.pt", "--rl_steps=1",
                   "--probe_interval=0", "--prompts_per_step=4", f"--score_while_decoding={overlap}",
                   f"--out_dir={tmp_path}/{overlap}", prefix=record)
        batches = json.loads(done.stdout.split("verdicts: ")[-1])
        verdicts[overlap] = (len(batches), sorted(map(tuple, sum(batches, []))))
        rows[overlap] = [{key: r[key] for key in ("reward", "pass_rate", "truncated", "entropy", "zero_adv_share")}
                         for r in metrics(tmp_path / str(overlap)) if r["stage"] == "oorl"]
    assert verdicts[True][1] == verdicts[False][1] and rows[True] == rows[False]
    assert verdicts[True][0] > 1 == verdicts[False][0]  # (pieces while decoding; one batch after it)


@pytest.mark.slow
def test_runs_of_one_seed_see_the_same_prompts_whatever_their_preference_loss(data_dir, smoke_run, tmp_path):
    """The ablation's rows differ by their loss alone: from one SFT model and one seed, a run
    without a preference loss, one with DPO and one with GEPO draw the same prompts at every
    step (the IR groups come from a generator of their own, and DPO draws more from it)."""
    record = ["-c", "import atexit, json, runpy, sys, reward; original = reward.Scorer.__init__; seen = []\n"
                    "def init(self, tasks, *args, **kw):\n"
                    "    seen.append([t['id'] for t in tasks])\n"
                    "    original(self, tasks, *args, **kw)\n"
                    "reward.Scorer.__init__ = init\n"
                    "atexit.register(lambda: print('prompts:', json.dumps(seen)))\n"
                    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"]
    prompts = {}
    for loss in ("none", "dpo", "gepo"):
        done = run(TRAIN, SMOKE, f"--data_dir={data_dir}", f"--sft_ckpt={smoke_run}/sft.pt", "--rl_steps=3",
                   "--probe_interval=0", "--prompts_per_step=4", f"--pref_loss={loss}", "--gepo_groups_per_step=2",
                   f"--out_dir={tmp_path}/{loss}", prefix=record)
        prompts[loss] = json.loads(done.stdout.split("prompts: ")[-1])
    assert len(prompts["none"]) == 3 and prompts["none"] == prompts["dpo"] == prompts["gepo"]
    assert len({tuple(step) for step in prompts["gepo"]}) == 3


@pytest.mark.slow
def test_levers_dynamic_sampling_replay_clip_higher_and_no_kl_run_together(data_dir, smoke_run, tmp_path):
    """filter_groups, replay_successes, epsilon_high and beta_kl = 0 in one run: the batch that
    reaches the advantages still holds prompts_per_step groups (the smoke model fails every
    program, so every round is sampled and the first round's groups make up the number), and
    with beta_kl = 0 (and no preference loss, whose reference log-probs are another matter) the
    frozen reference never runs a completion forward; with 0.01 it does."""
    record = ["-c", "import atexit, runpy, sys, model, reinforce; original = model.GPT.completion_logprobs; "
                    "frozen = []; rows = []\n"
                    "def logprobs(self, *a, **k):\n"
                    "    frozen.append(not any(p.requires_grad for p in self.parameters()))\n"
                    "    return original(self, *a, **k)\n"
                    "model.GPT.completion_logprobs = logprobs; advantages = reinforce.reinforce_pp_advantages\n"
                    "reinforce.reinforce_pp_advantages = lambda r, *a: (rows.append(len(r)), advantages(r, *a))[1]\n"
                    "atexit.register(lambda: print('reference forwards:', sum(frozen), 'rows:', rows))\n"
                    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"]
    common = [TRAIN, SMOKE, f"--data_dir={data_dir}", f"--sft_ckpt={smoke_run}/sft.pt", "--rl_steps=2",
              "--probe_interval=0", "--pref_loss=none", "--prompts_per_step=2", "--group_size=4", "--filter_groups=True",
              "--max_num_gen_batches=2", "--replay_successes=True", "--epsilon_high=0.28"]
    done = run(*common, "--beta_kl=0", f"--out_dir={tmp_path}/a", prefix=record)
    assert "reference forwards: 0 rows: [8, 8]" in done.stdout
    rl_rows = [r for r in metrics(tmp_path / "a") if r["stage"] == "oorl"]
    assert [r["gen_batches"] for r in rl_rows] == [2, 2] and all(r["kl"] is None for r in rl_rows)
    assert all(r["replayed"] == 0 for r in rl_rows)  # nothing ever passed: nothing to replay
    done = run(*common, "--beta_kl=0.01", f"--out_dir={tmp_path}/b", prefix=record)
    assert "reference forwards: 0 " not in done.stdout and "rows: [8, 8]" in done.stdout


@pytest.mark.slow
def test_wandb_logging_sends_the_metrics_rows(data_dir, smoke_run, tmp_path):
    """--wandb_log=True logs every metrics.jsonl row to Weights & Biases (a stand-in module here:
    the suite never needs the package or a network), and nothing imports wandb otherwise."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "wandb.py").write_text("import json, os\nLOG = os.environ['FAKE_WANDB_LOG']\n"
                                   "def init(**kw):\n    open(LOG, 'a').write(json.dumps({'init': kw['project']}) + '\\n')\n"
                                   "def log(row, step=None):\n    open(LOG, 'a').write(json.dumps(row) + '\\n')\n")
    env = dict(os.environ, PYTHONPATH=str(fake), FAKE_WANDB_LOG=str(tmp_path / "wandb.jsonl"))
    args = [sys.executable, TRAIN, SMOKE, f"--data_dir={data_dir}", f"--sft_ckpt={smoke_run}/sft.pt", "--rl_steps=1",
            "--probe_interval=0"]
    done = subprocess.run(args + [f"--out_dir={tmp_path}/off"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and not (tmp_path / "wandb.jsonl").exists()
    done = subprocess.run(args + [f"--out_dir={tmp_path}/on", "--wandb_log=True", "--wandb_project=p"], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    logged = [json.loads(line) for line in open(tmp_path / "wandb.jsonl")]
    assert logged[0] == {"init": "p"} and logged[1:] == metrics(tmp_path / "on")


@pytest.mark.slow
def test_compile_does_not_recompile_after_the_first_rl_step(data_dir, smoke_run, tmp_path):
    """--compile=True compiles each block once per variant it runs in (policy or reference, with
    or without gradients, full forward, prefill or decode), all met in the first RL step; the
    token counts that change every step recompile nothing, and the recompile limit is never hit
    (past it torch.compile would quietly run eager)."""
    env = dict(os.environ, TORCH_LOGS="recompiles")
    done = subprocess.run([sys.executable, TRAIN, SMOKE, f"--data_dir={data_dir}", f"--out_dir={tmp_path}",
                           f"--sft_ckpt={smoke_run}/sft.pt", "--rl_steps=4", "--probe_interval=0", "--compile=True"],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = done.stdout  # (the step lines and torch's log, in the order they were written)
    assert done.returncode == 0, log[-3000:]
    assert "hit config.recompile_limit" not in log
    after_first_step = log[log.index("oorl step 0 "):]
    assert "Recompiling" not in after_first_step
