"""eval.py under torchrun: 2 gloo processes on the CPU shard the tasks and gather the counts into
the same JSON as one process (the sampling of a batch depends on its place in a fixed order, never
on which rank runs it)."""
import json
import os
import subprocess
import sys

import pytest

from test_eval import ROOT, TINY_DATA, make_checkpoint


@pytest.mark.slow
def test_two_ranks_write_the_same_json_as_one_process(tmp_path):
    data = tmp_path / "data"
    subprocess.run([sys.executable, "prepare.py", f"--data_dir={data}", *TINY_DATA], cwd=ROOT, check=True,
                   capture_output=True)
    make_checkpoint(tmp_path / "a.pt", data, 0)
    # 16 pairs x 2 tasks, 4 prompts a batch: 8 batches, so that each rank runs several; --show
    # records every task's first completion, so that the completions themselves are compared
    args = [f"--ckpt={tmp_path / 'a.pt'}", "--n=2", "--max_tasks_per_pair=2", "--max_new_tokens=12",
            "--batch_size=8", "--show=1000", "--probe_groups="]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the same float reductions in every process
    one = subprocess.run([sys.executable, "eval.py", *args, f"--out_json={tmp_path / 'one.json'}"], cwd=ROOT,
                         env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stdout + one.stderr
    # "--": torchrun would take --n=2 for an abbreviation of its own --nnodes / --nproc_per_node
    two = subprocess.run(["torchrun", "--standalone", "--nproc_per_node=2", "eval.py", "--", *args,
                          f"--out_json={tmp_path / 'two.json'}"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stdout + two.stderr
    assert "over 2 ranks" in two.stdout  # rank 0 alone prints and writes:
    assert two.stdout.count("evaluating ") == 1 and two.stdout.count("wrote ") == 1
    one_json, two_json = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    for result in (one_json, two_json):
        del result["seconds"]
    assert len(one_json["examples"]) == 32 and sum(one_json["statuses"].values()) == 64
    assert one_json == two_json
