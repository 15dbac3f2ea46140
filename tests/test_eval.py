"""Tests of eval.py: task selection, reports and plots on fake results, and an end-to-end
evaluation of a smoke checkpoint (its JSON keys, its reuse, --compare)."""
import json
import os
import subprocess
import sys

import pytest
import torch

import benchmarks
import eval as evaluation
import stats
import tasks
import tokenizer
from model import GPT, GPTConfig
from rollout import Rollout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_unavailable_targets_are_dropped_with_one_message(monkeypatch, capsys):
    monkeypatch.setattr(evaluation.reward, "available", lambda lang: lang not in ("rust", "php"))
    targets, missing = evaluation.available_targets(0)
    assert missing == ["php", "rust"] and "php" not in targets and "java" in targets
    out = capsys.readouterr().out
    assert out.count("not evaluated") == 1 and "php, rust" in out
    all_tasks = [{"src_lang": "python", "tgt_lang": t, "id": t} for t in ("java", "php", "rust", "lua")]
    by_pair, too_long = evaluation.select_tasks(all_tasks, 0, lambda task: task["id"] != "lua", targets)
    assert set(by_pair) == {"python->java"} and too_long == 1


def test_pass_matrix_puts_rl_and_heldout_targets_apart():
    counts = {"python->java": {"t0": 3, "t1": 5}, "cpp->java": {"t0": 1, "t1": 1}, "cpp->go": {"t0": 10, "t1": 10}}
    _, pairs = stats.summarize(counts, 10)
    text = evaluation.pass_matrix(pairs, "title")
    _, header, python_row, cpp_row = text.splitlines()
    assert header.index("php") < header.index("|") < header.index("rust")
    assert python_row.split()[:5] == ["python", "-", "-", "40±20", "-"]
    assert cpp_row.split("|")[1].split() == ["-", "100±0", "-"]


# ----------------------------------------------------------------------------- end to end

# prepare.py overrides for a tiny world: 120 training programs, 10 per eval split, a few IR groups
TINY_DATA = ["--n_train=120", "--n_val=10", "--n_test=10", "--n_ir_groups=6", "--vocab_size=512"]


def make_checkpoint(path, data_dir, seed):
    """A checkpoint as train.py writes one (model, model_args, config, stage, tokenizer record),
    of a tiny random GPT: its completions are nonsense, which is all the plumbing needs."""
    enc = tokenizer.load(str(data_dir))
    torch.manual_seed(seed)
    args = dict(block_size=512, vocab_size=enc.n_vocab, n_layer=1, n_head=2, n_embd=32, dropout=0.0)
    torch.save(dict(model=GPT(GPTConfig(**args)).state_dict(), model_args=args, stage="sft", tokenizer=enc.record(),
                    config=dict(data_dir=str(data_dir), max_new_tokens=16, gepo_beta=0.1)), path)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """Tiny data, two tiny checkpoints and a held-out IR groups file: (data_dir, a.pt, b.pt)."""
    tmp = tmp_path_factory.mktemp("eval")
    data = tmp / "data"
    done = subprocess.run([sys.executable, "prepare.py", f"--data_dir={data}", *TINY_DATA], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (data / "probe_groups.jsonl").write_text("".join((data / "ir_groups.jsonl").read_text().splitlines(True)[:3]))
    make_checkpoint(tmp / "a.pt", data, 0)
    make_checkpoint(tmp / "b.pt", data, 1)
    return data, tmp / "a.pt", tmp / "b.pt"


def run_eval(*args):
    done = subprocess.run([sys.executable, "eval.py", *args], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


FIGURE = {"pass@1", "ci95", "n_pairs", "n_tasks"}


@pytest.mark.slow
def test_eval_end_to_end_json_compare_probe_and_show(tiny_world):
    data, a, b = tiny_world
    args = [f"--ckpt={a}", "--n=2", "--max_tasks_per_pair=2", "--max_new_tokens=16", "--probe_groups=probe_groups.jsonl"]
    stdout = run_eval(*args, f"--compare={b}", "--show=3")
    result = json.loads(a.with_suffix(".eval.json").read_text())
    assert set(result) == {"ckpt", "ckpt_mtime", "settings", "groups", "pairs", "not_evaluated", "statuses", "counts",
                           "outcomes", "examples", "seconds", "ir_probe", "difference"}
    pairs = {f"{s}->{t}" for s in tasks.SOURCE_LANGS for t in tasks.RL_TARGETS + tasks.HELDOUT_TARGETS if s != t}
    assert set(result["pairs"]) == set(result["counts"]) == pairs and result["not_evaluated"] == []
    assert {"all", "rl", "heldout", "target java", "target lua"} <= set(result["groups"])
    for figure in list(result["groups"].values()) + list(result["pairs"].values()):
        assert set(figure) == FIGURE and set(figure["ci95"]) == {"pass@1"}
        lo, hi = figure["ci95"]["pass@1"]
        assert 0.0 <= lo <= figure["pass@1"] <= hi <= 1.0
    assert all(len(by_task) == 2 for by_task in result["counts"].values())
    # each sample's outcome, in seed order: what --budget pairs sample by sample
    assert {pair: {t: o.count("1") for t, o in by_task.items()} for pair, by_task in result["outcomes"].items()} \
        == result["counts"]
    assert all(len(o) == 2 and set(o) <= {"0", "1"} for by_task in result["outcomes"].values() for o in by_task.values())
    assert sum(result["statuses"].values()) == 2 * 2 * len(pairs)
    difference = result["difference"]
    assert difference["compared_with"] == str(b) and set(difference["groups"]) == set(result["groups"])
    assert set(difference["groups"]["rl"]) == FIGURE
    probe = result["ir_probe"]
    assert probe["groups"] == 3 and probe["reference"] == str(b) and 0.0 <= probe["positive_share"] <= 1.0
    assert len(result["examples"]) == 3
    assert set(result["examples"][0]) == {"pair", "task", "source", "completion", "verdict", "passed", "total", "error"}
    for text in ("source \\ target", "rl: pass@1", "paired difference", "IR probe on 3 held-out groups",
                 "--- source", "--- completion", "target lua: pass@1"):
        assert text in stdout, text

    # the same settings again: both JSONs are reused; --ref_ckpt sets the probe's reference alone
    stdout = run_eval(*args, f"--ref_ckpt={a}")
    assert "reusing" in stdout and "margin +0.0000, positive in 0%" in stdout  # a model against itself
    stdout = run_eval(*args, f"--compare={b}", "--budget=2")
    assert "reusing" in stdout and "tasks/pair   n  measured predicted" in stdout

    # greedy decoding: one sample at temperature 0
    run_eval(*args, "--greedy=True", f"--out_json={a.parent / 'greedy.json'}")
    greedy = json.loads((a.parent / "greedy.json").read_text())
    assert greedy["settings"]["n"] == 1 and greedy["settings"]["temperature"] == 0.0


@pytest.mark.slow
def test_a_checkpoint_that_runs_code_when_loaded_is_refused(tiny_world, tmp_path):
    """weights_only=True: a pickle that would call a function on load is an error, and runs nothing."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": {}, "model_args": {}, "config": Payload()}, tmp_path / "evil.pt")
    done = subprocess.run([sys.executable, "eval.py", f"--ckpt={tmp_path / 'evil.pt'}"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode != 0 and "evil.pt" in done.stderr and not marker.exists()


def test_a_file_of_random_bytes_is_one_line_naming_it(tmp_path):
    (tmp_path / "noise.pt").write_bytes(os.urandom(4096))
    done = subprocess.run([sys.executable, "eval.py", f"--ckpt={tmp_path / 'noise.pt'}", "--reuse=False"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "noise.pt" in done.stderr


@pytest.mark.slow
def test_an_oracle_that_samples_the_reference_once_in_five_scores_a_fifth(tiny_world, monkeypatch):
    """The whole pipeline (tokenizer, decoding, the real reward.py, counting, pass@k) on known
    answers: sample 0 of every task is its reference translation, the others are nonsense, so
    pass@1 is exactly 1/5 and pass@5 exactly 1 on every pair."""
    data, a, _ = tiny_world
    enc = tokenizer.load(str(data))
    with open(data / "tasks_test.jsonl") as f:
        reference_of = {tuple(enc.encode(t["prompt"])): t["reference"] for t in map(json.loads, f)}

    def oracle(model, prompts, group_size, max_new_tokens, eot_id, *args, on_end=None):
        assert on_end is None  # a CPU evaluation scores after decoding
        rows = [enc.encode(reference_of[tuple(p)] if g == 0 else "nonsense") + [eot_id]
                for p in prompts for g in range(group_size)]
        width = max(map(len, rows))
        completions = torch.full((len(rows), width), eot_id)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for r, row in enumerate(rows):
            completions[r, :len(row)], mask[r, :len(row)] = torch.tensor(row), True
        zeros = torch.zeros(len(rows), width)
        return Rollout([list(p) for p in prompts], group_size, completions, mask,
                       torch.zeros(len(rows), dtype=torch.bool), zeros)

    monkeypatch.setattr(evaluation, "rollout", oracle)
    config = dict(split="test", n=5, temperature=0.8, greedy=False, top_k=None, top_p=None, max_new_tokens=0,
                  max_tasks_per_pair=2, seed=0, data_dir="", batch_size=20, show=0)
    result = evaluation.evaluate(str(a), config)
    for pair, p in result["pairs"].items():
        assert p["n_tasks"] == 2, pair
        assert p["pass@1"] == pytest.approx(1 / 5) and p["pass@5"] == pytest.approx(1.0), pair
        assert p["ci95"]["pass@1"] == [pytest.approx(0.2), pytest.approx(0.2)]  # no variance at all
    assert result["groups"]["rl"]["pass@1"] == pytest.approx(1 / 5)
    assert result["groups"]["heldout"]["pass@5"] == pytest.approx(1.0)
    assert len(result["pairs"]) == 16 and result["statuses"] == {"passed": 2 * 16, "malformed": 2 * 4 * 16}


# ----------------------------------------------------------------------------- public benchmarks

def write_humaneval_x(path, langs):
    from test_benchmarks import humaneval_x_record, write_jsonl
    return write_jsonl(path, [humaneval_x_record(lang) for lang in langs])


@pytest.mark.slow
def test_benchmark_from_a_checkpoint_with_compare_and_a_too_long_prompt(tiny_world, tmp_path):
    data, a, b = tiny_world
    bench = write_humaneval_x(tmp_path / "humaneval_x.jsonl", ["python", "javascript"])
    out = run_eval(f"--ckpt={a}", f"--compare={b}", f"--benchmark={bench}", f"--out_json={tmp_path / 'a.json'}",
                   "--max_new_tokens=500", "--n=2")  # 500 of the block's 512: a prompt does not fit
    result = json.loads((tmp_path / "a.json").read_text())
    for lang, name in (("python", "Python/0"), ("javascript", "JavaScript/0")):
        entry = result["benchmark"][lang]
        assert entry["problems"] == 1 and len(entry["outcomes"][name]) == 2 and entry["pass@1"] == 0.0
    assert result["prompt_too_long"] == 2 and "2 prompts do not fit" in out
    assert "average:   0.0" in out and f"vs {b}: +0.0" in out
    out = run_eval(f"--ckpt={a}", f"--benchmark={bench}", f"--out_json={tmp_path / 'b.json'}")
    statuses = {s for e in json.loads((tmp_path / "b.json").read_text())["benchmark"].values() for s in e["statuses"]}
    assert "prompt_too_long" not in statuses and statuses - {"passed"}, statuses  # sampled and judged


def benchmark_config(**settings):
    return dict(dict(benchmark="", translate_from="", completions="", chat=False, n=1, temperature=0.8, greedy=False,
                     top_k=None, top_p=None, max_new_tokens=0, max_tasks_per_pair=0, seed=0, data_dir="",
                     batch_size=8, split="test"), **settings)


def test_benchmark_completions_and_translations_are_scored(tmp_path):
    bench = write_humaneval_x(tmp_path / "humaneval_x.jsonl", ["python", "javascript"])
    completions = tmp_path / "completions.jsonl"
    completions.write_text("".join(json.dumps(line) + "\n" for line in (
        {"task_id": "Python/0", "completion": "    return a + b\n"}, {"task_id": "Python/0", "completion": "    return a\n"},
        {"task_id": "JavaScript/0", "completion": "  return a + b\n}\n"},
        {"task_id": "JavaScript/0", "completion": "  return a + b\n}\n"})))
    result = evaluation.evaluate_benchmark(None, benchmark_config(benchmark=str(bench), completions=str(completions)))
    scores = result["benchmark"]
    assert scores["python"]["outcomes"] == {"Python/0": [1, 0]} and scores["python"]["pass@1"] == 50.0
    assert scores["javascript"]["statuses"] == {"passed": 2} and result["settings"]["n"] == 2
    assert "average:  75.0" in benchmarks.report(result)
    # a translation from Python: only the JavaScript problem is a translation; the completion continues its prompt
    source = write_humaneval_x(tmp_path / "python.jsonl", ["python"])
    completions.write_text(json.dumps({"task_id": "JavaScript/0", "completion": "  return a + b\n}\n"}) + "\n")
    config = benchmark_config(benchmark=str(bench), translate_from=source, completions=str(completions))
    result = evaluation.evaluate_benchmark(None, config)
    assert list(result["benchmark"]) == ["javascript"] and result["benchmark"]["javascript"]["pass@1"] == 100.0
    prompt = benchmarks.prompts(str(bench), source)["JavaScript/0"][1]
    assert "return a + b" in prompt and prompt.endswith("const add = (a, b) => {\n")
    completions.write_text(json.dumps({"task_id": "Python/0", "completion": "    return a + b\n"}) + "\n")
    with pytest.raises(SystemExit, match="'Python/0' is not a problem"):
        evaluation.evaluate_benchmark(None, config)
    completions.write_text(json.dumps({"task_id": "Python/0"}) + "\n")
    with pytest.raises(SystemExit, match='a line without a "completion"'):
        evaluation.evaluate_benchmark(None, dict(config, translate_from=""))
    with pytest.raises(SystemExit, match="no benchmark file or folder"):
        evaluation.evaluate_benchmark(None, dict(config, benchmark=str(tmp_path / "missing")))


QWEN_CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                      "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_benchmark_chat_on_a_tiny_qwen3_directory_takes_the_replys_code_block(tmp_path, monkeypatch):
    """A checkpoint started from a tiny random Qwen3 directory with a chat template: the prompt
    goes through the template, and a reply whose code block repeats the signature is judged on
    its body (sampling replaced by known replies: one right, one wrong)."""
    import transformers
    from test_model_families import make_tiny_family
    model_dir = make_tiny_family(tmp_path / "qwen3", "qwen3")
    hf = transformers.AutoTokenizer.from_pretrained(model_dir)
    hf.chat_template = QWEN_CHAT_TEMPLATE
    hf.save_pretrained(model_dir)
    enc = tokenizer.load(init_from=model_dir)
    model = GPT.from_pretrained(model_dir, vocab_size=enc.n_vocab)
    torch.save(dict(model=model.state_dict(), model_args=vars(model.config), stage="sft", tokenizer=enc.record(),
                    config=dict(data_dir=str(tmp_path), max_new_tokens=64)), tmp_path / "qwen3.pt")
    bench = write_humaneval_x(tmp_path / "humaneval_x.jsonl", ["python"])
    replies = ["Sure:\n```python\ndef add(a, b):\n    return a + b\n```\n", "```python\n    return b\n```"]
    seen = []

    def chat_model(model, prompts, group_size, max_new_tokens, eot_id, *args, on_end=None):
        seen.extend(enc.decode(p) for p in prompts)
        rows = [enc.encode(reply) + [eot_id] for reply in replies]
        width = max(map(len, rows))
        completions, mask = torch.full((len(rows), width), eot_id), torch.zeros(len(rows), width, dtype=torch.bool)
        for r, row in enumerate(rows):
            completions[r, :len(row)], mask[r, :len(row)] = torch.tensor(row), True
        return Rollout([list(p) for p in prompts], group_size, completions, mask,
                       torch.zeros(len(rows), dtype=torch.bool), torch.zeros(len(rows), width))

    monkeypatch.setattr(evaluation, "rollout", chat_model)
    result = evaluation.evaluate_benchmark(str(tmp_path / "qwen3.pt"), benchmark_config(benchmark=str(bench), chat=True, n=2))
    assert seen and seen[0].startswith("<|im_start|>user\n") and seen[0].endswith("<|im_start|>assistant\n")
    assert result["benchmark"]["python"]["outcomes"] == {"Python/0": [1, 0]}
