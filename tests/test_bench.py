"""Tests of bench.py: each benchmark part running end to end on tiny sizes (the kernel parts:
tests/test_bench_kernel.py), the kernel part's shapes from the presets, and the saved figures."""
import json
import os
import re
import subprocess
import sys

import pytest

import bench
import configurator
import languages
import reward

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_rollout_part_runs_on_a_tiny_model():
    tiny = dict(n_layer=1, n_head=2, n_embd=16, vocab_size=50, prompts=2, group_size=2, prompt_len=5, new_tokens=6)
    figures = bench.bench_rollout(size_overrides=tiny, reps=1)
    assert figures["tokens_per_s"] > 0 and figures["tokens_per_cpu_s"] > 0


def test_reward_part_runs_on_one_language():
    figures = bench.bench_reward(langs=("python",), baseline_sample=2)
    assert set(figures["python"]) == {"reward_score", "naive", "naive_compile_once"}


def test_naive_baseline_compiles_each_program_as_a_user_would():
    """The baseline compiles with languages.plain_compile: one program a call, no batch, nothing
    from a warm-up, in a directory of its own."""
    completions, batch = [], []
    for lang in ("cpp", "java", "go", "rust"):
        lang_completions, lang_batch = bench._reward_batch(lang, n_tasks=1)
        completions += lang_completions
        batch += lang_batch
    assert bench._naive_rewards(completions, batch, compile_per_test=False, workers=2) == [1.0, 1.0, 0.0, 0.0] * 4
    for lang, spec in languages.LANGUAGES.items():
        if spec.compiled:
            command = " ".join(languages.plain_compile(lang))
            assert "{src}" in command and "{out}" in command and "{cache}" not in command, lang
    with pytest.raises(ValueError, match="python is not compiled"):
        languages.plain_compile("python")


def test_cold_scores_start_from_an_empty_cache_warmed_up_again(tmp_path):
    """reward.fresh_cache, as bench.py's reward part scores: a compile cache and verdict store of
    their own, which the language's warm-up prepares again (g++'s precompiled header) however
    often it was prepared elsewhere; the usual ones serve again afterwards."""
    hello, task = languages.HELLO["cpp"], {"tgt_lang": "cpp", "tests": [], "n_args": 0}
    assert reward.execute(hello, "cpp").stdout == "ok\n"  # warmed up in the usual cache
    key, verdict = reward.verdict_key(task, str(tmp_path), False), reward.Verdict(1.0, "passed", 0, 0, "")
    reward.store_verdicts([key], [verdict])
    for i in range(2):
        with reward.fresh_cache(str(tmp_path / f"cache-{i}")) as cache:
            assert reward.stored_verdicts([key]) == [None]
            assert reward.execute(hello, "cpp").stdout == "ok\n"
            assert os.path.isfile(os.path.join(cache, ".cpp", "prelude.h.gch"))
    assert reward.stored_verdicts([key]) == [verdict]


def test_run_budget_part_measures_references_within_the_budget():
    figures = bench.bench_run_budget(n_programs=2, langs=("python", "bash"))
    for lang in ("python", "bash"):
        assert 0 < figures[lang]["median"] <= figures[lang]["max"] < reward.RUN_TIMEOUT
        assert 0 < figures[lang]["heaviest"] < reward.RUN_TIMEOUT


def test_command_line_names_every_part():
    run = subprocess.run([sys.executable, "bench.py", "--part=nope"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode and all(part in run.stderr for part in ("kernel", "gpu_compile", "rollout", "reward"))


METRICS = [dict(step=9, stage="sft", loss=1.2),
           dict(step=0, stage="oorl", reward=0.4, time_rollout=4.0, time_reward=8.0, time_update=13.0, time_reference=1.0,
                time_pi_old=0.25, time_policy=[5.0, 4.5], time_preference=2.0, time_optimizer=0.25),
           dict(step=1, stage="oorl", reward=0.5, time_rollout=3.5, time_reward=7.0, time_update=11.0, time_reference=1.0,
                time_pi_old=0.5, time_policy=[4.5, 4.5], time_optimizer=0.5)]  # (a step without the preference loss)


def test_step_part_reads_the_phases_train_py_logs(monkeypatch, tmp_path, capsys):
    """bench_step runs train.py from the checkpoint at the CPU preset's workload (here a stand-in
    that writes metrics.jsonl), with a TMPDIR of its own (an empty compile cache, no kept verdict),
    and reports each step's phases as a table and figures."""
    commands = []

    def fake_train(argv, cwd, check, env):
        commands.append(argv[1:])
        out_dir = next(arg.split("=", 1)[1] for arg in argv if arg.startswith("--out_dir="))
        assert os.path.dirname(out_dir) == env["TMPDIR"] != os.environ.get("TMPDIR")
        os.makedirs(out_dir)
        with open(os.path.join(out_dir, "metrics.jsonl"), "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in METRICS)
    monkeypatch.setattr(subprocess, "run", fake_train)
    figures = bench.bench_step(ckpt="out/sft.pt")
    assert commands == [["train.py", "--preset=cpu", f"--sft_ckpt={os.path.abspath('out/sft.pt')}", "--rl_steps=2",
                         "--probe_interval=0", f"--data_dir={os.path.abspath('data')}", commands[0][6]]]
    assert figures["command"].startswith("python train.py --preset=cpu --sft_ckpt=")
    first, second = figures["steps"]
    assert first == dict(time_rollout=4.0, time_reward=8.0, time_update=13.0, time_reference=1.0, time_pi_old=0.25,
                         time_policy=[5.0, 4.5], time_preference=2.0, time_optimizer=0.25, time_step=25.0)
    assert second["time_step"] == 21.5 and "time_preference" not in second
    out = capsys.readouterr().out
    cpu = configurator.read_file(os.path.join(ROOT, "config", "cpu.py"))
    assert f"{cpu['prompts_per_step']} prompts x {cpu['group_size']} completions" in out.splitlines()[0]
    table = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()[1:12]]
    assert table == [["phase", "step 0", "step 1"],
                     ["rollout", "4.00", "3.50"],
                     ["reward, after decoding", "8.00", "7.00"],
                     ["update", "13.00", "11.00"],
                     ["reference log-probs", "1.00", "1.00"],
                     ["pi_old log-probs", "0.25", "0.50"],
                     ["policy fwd+bwd, epoch 1", "5.00", "4.50"],
                     ["policy fwd+bwd, epoch 2", "4.50", "4.50"],
                     ["preference loss fwd+bwd", "2.00", "-"],
                     ["optimizer, grad sum, clip", "0.25", "0.50"],
                     ["step: rollout+reward+update", "25.00", "21.50"]]


def test_figures_file_keeps_the_latest_of_each_part(tmp_path):
    path = tmp_path / "out" / "bench.json"
    bench._save_figures(str(path), {"step": {"steps": [1]}, "reward": {"python": 1}})
    bench._save_figures(str(path), {"step": {"steps": [2]}})
    assert json.loads(path.read_text()) == {"step": {"steps": [2]}, "reward": {"python": 1}}


def test_the_kernel_parts_shapes_are_a_large_vocabulary_and_the_presets_rl_batch(monkeypatch):
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    cpu = configurator.read_file(os.path.join(ROOT, "config", "cpu.py"))
    assert bench.kernel_shapes() == [(8192, 256, 32768), (cpu["prompts_per_step"] * cpu["group_size"] * (
        bench.PROMPT_TOKENS + bench.NEW_TOKENS), cpu["n_embd"], bench.VOCAB_SIZE)]
