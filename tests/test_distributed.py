"""Data parallelism under torchrun, checked on the CPU with gloo: the advantages and update of 2
ranks, and of 3 ranks on a batch they cannot split evenly (one of them holding no IR group), equal
one process's on the union batch; uneven shares, and the gradient sum with a rank that learnt
nothing; config/smoke.py end to end under torchrun on uneven batches, its SFT weights equal to
one process's. Also the device set-up: the device and autocast a run asks for, and a GPU that
torch cannot use refused by name."""
import contextlib
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ddp
import gepo
import reinforce
from model import GPT, GPTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T = 12  # tokens per completion


def union_batch(N):
    """A fixed batch of N rollouts, as train.py would hold it on one process."""
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(N, T, dtype=torch.bool)
    for row, length in enumerate(torch.randint(3, T + 1, (N,), generator=g).tolist()):
        mask[row, length:] = False
    return dict(idx=torch.randint(0, 50, (N, T), generator=g), targets=torch.randint(0, 50, (N, T), generator=g),
                mask=mask, rewards=torch.randint(0, 2, (N,), generator=g).float(),
                logp_ref=-torch.rand(N, T, generator=g) * 3)


def groups(count):
    """IR groups of token ids for the preference loss."""
    g = torch.Generator().manual_seed(1)

    def ids(n):
        return torch.randint(0, 50, (n,), generator=g).tolist()
    return [dict(prompt_ids=ids(5), winner_ids=[ids(4), ids(6)], loser_ids=[ids(5)]) for _ in range(count)]


def oorl_update(model, batch, my_groups, n_groups):
    """One OORL update as train.py takes it: pi_old from the training forward, REINFORCE++
    advantages, the clipped loss over the global tokens, the preference loss as this rank's share
    of the global groups' mean (nothing on a rank that holds no group), gradients summed over ranks,
    one AdamW step. Returns advantages."""
    # eps well above float noise: Adam moves a coordinate by ~lr whatever its gradient's size, so a
    # gradient that is 0 up to rounding (1e-10 here or there) must not take a step of its own
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, eps=1e-6)
    logp = model.token_logprobs(batch["idx"], batch["targets"])
    advantages, _ = reinforce.reinforce_pp_advantages(batch["rewards"], logp.detach(), batch["logp_ref"],
                                                      batch["mask"], beta_kl=0.05)
    loss, _ = reinforce.policy_loss(logp, logp.detach(), advantages, batch["mask"])
    if my_groups:
        with torch.no_grad():
            ref_c, ref_r, _, _ = gepo.group_logps(model, my_groups, "cpu")
        c, r, cm, rm = gepo.group_logps(model, my_groups, "cpu")
        loss = loss + 0.5 * gepo.gepo_loss(c, r, ref_c + 0.1, ref_r, cm, rm) * len(my_groups) / n_groups
    loss.backward()
    ddp.sum_gradients(model.parameters())
    optimizer.step()
    return advantages


def tiny_model():
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=32, vocab_size=64, n_layer=1, n_head=2, n_embd=16))


def _worker(rank, world, n_rows, n_groups, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    batch = {k: v[rank::world] for k, v in union_batch(n_rows).items()}  # this rank's rows (ddp.shard's order)
    model = tiny_model()
    advantages = oorl_update(model, batch, ddp.shard(groups(n_groups)), n_groups)
    gathered = ddp.gather((advantages, batch["mask"]))
    if rank == 0:
        torch.save(dict(advantages=[a for a, _ in gathered], params=model.state_dict()), out_file)
    dist.destroy_process_group()


@pytest.mark.parametrize("world,n_rows,n_groups", [(2, 8, 4), (3, 7, 2)])  # 3 ranks: 3, 2, 2 rows; 1, 1, 0 groups
def test_ranks_take_the_step_of_one_process_on_the_union_batch(tmp_path, world, n_rows, n_groups):
    out_file = tmp_path / "ranks.pt"
    mp.spawn(_worker, args=(world, n_rows, n_groups, str(tmp_path / "init"), str(out_file)), nprocs=world, join=True)
    ranks = torch.load(out_file, weights_only=True)

    model = tiny_model()
    advantages = oorl_update(model, union_batch(n_rows), groups(n_groups), n_groups)
    # REINFORCE++ normalises over every token of the global batch: rank r holds rows r, r + world, ...
    for rank, rank_advantages in enumerate(ranks["advantages"]):
        assert torch.allclose(rank_advantages, advantages[rank::world], atol=1e-5)
    for name, value in model.state_dict().items():
        assert torch.allclose(ranks["params"][name], value, atol=1e-5), name


def _helpers_worker(rank, world, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    shares = [ddp.gather(ddp.shard(list(range(n)))) for n in (7, 2)]
    # gradients summed over ranks where the last rank's share was empty: it ran no backward at all
    weight = torch.nn.Parameter(torch.zeros(3))
    if rank < world - 1:
        (weight * torch.tensor([1.0, 2.0, 3.0]) * (rank + 1)).sum().backward()
    ddp.sum_gradients([weight])
    if rank == 0:
        torch.save(dict(shares=shares, grad=weight.grad), out_file)
    dist.destroy_process_group()


def test_uneven_shares_and_a_rank_with_nothing_to_learn(tmp_path):
    """7 items on 3 ranks: shares of 3, 2 and 2 in ddp.shard's order; 2 items: the last rank holds
    none. A rank that ran no backward (an empty share, or every completion of its share an
    infrastructure failure) still joins the gradient sum, with zeros."""
    out_file = tmp_path / "helpers.pt"
    mp.spawn(_helpers_worker, args=(3, str(tmp_path / "init"), str(out_file)), nprocs=3, join=True)
    got = torch.load(out_file, weights_only=True)
    assert got["shares"] == [[[0, 3, 6], [1, 4], [2, 5]], [[0], [1], []]]
    assert torch.equal(got["grad"], torch.tensor([3.0, 6.0, 9.0]))  # (1 + 2) x [1, 2, 3]


def run(*args):
    done = subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data = tmp_path_factory.mktemp("ddp") / "data"
    run(sys.executable, "prepare.py", f"--data_dir={data}", "--n_train=120", "--n_val=10", "--n_test=10",
        "--n_ir_groups=6", "--n_ir_groups_val=4", "--vocab_size=512")
    return data


@pytest.mark.slow
def test_smoke_under_torchrun_matches_one_process_sft_and_resumes(data_dir, tmp_path):
    """config/smoke.py end to end on 2 gloo ranks, with batches they cannot split evenly: 7 SFT
    examples, 3 prompts, and smoke.py's one IR group a step (rank 1 holds none). Every rank draws
    the same global SFT batch and keeps its share, so the SFT weights equal one process's (up to
    float summation order)."""
    common = ["config/smoke.py", f"--data_dir={data_dir}", "--sft_steps=6", "--sft_batch_size=7", "--prompts_per_step=3"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py"]
    stdout = run(*torchrun, *common, f"--out_dir={tmp_path}/two", "--rl_steps=2")
    assert "2 ranks" in stdout and stdout.count("oorl step 1 ") == 1  # rank 0 alone prints
    run(sys.executable, "train.py", *common, f"--out_dir={tmp_path}/one", "--rl_steps=0")
    one = torch.load(tmp_path / "one" / "sft.pt", weights_only=True)["model"]
    two = torch.load(tmp_path / "two" / "sft.pt", weights_only=True)["model"]
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-4), name
    assert (tmp_path / "two" / "oorl.pt").exists()
    stdout = run(*torchrun, *common, f"--out_dir={tmp_path}/two", "--rl_steps=3", "--resume=True")
    assert "resume: OORL from step 2" in stdout
    assert torch.load(tmp_path / "two" / "ckpt.pt", weights_only=True)["step"] == 3


# ----------------------------------------------------------------------------- device set-up

def test_device_setup_decides_by_device_type(monkeypatch):
    device, autocast = ddp.device_setup("cpu")
    assert device == "cpu" and isinstance(autocast, contextlib.nullcontext)
    if not ddp.nvidia_smi_gpus():
        assert ddp.device_setup("auto")[0] == ("cuda" if torch.cuda.is_available() else "cpu")
    precision = torch.get_float32_matmul_precision()
    try:  # a GPU machine, as CPU-only torch can pretend: "cuda:0" is CUDA too
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
        device, autocast = ddp.device_setup("cuda:0")
        assert device == "cuda:0" and isinstance(autocast, torch.autocast)
        assert autocast.device == "cuda" and autocast.fast_dtype == torch.bfloat16
        assert torch.get_float32_matmul_precision() == "high"  # TF32 matmuls
        assert isinstance(ddp.device_setup("cuda:0", dtype="float32")[1], contextlib.nullcontext)
    finally:
        torch.set_float32_matmul_precision(precision)
    device, autocast = ddp.device_setup("cpu", dtype="bfloat16")  # reduced precision on a CPU
    assert isinstance(autocast, torch.autocast) and autocast.device == "cpu" and autocast.fast_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be"):
        ddp.device_setup("cpu", dtype="float16")
    if not torch.cuda.is_available() and not ddp.nvidia_smi_gpus():
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        with pytest.raises(ValueError, match="no CUDA GPU"):
            ddp.device_setup("cuda")


def test_device_setup_makes_a_numbered_gpu_the_current_one(monkeypatch):
    """Triton launches its kernels on the current CUDA device, whatever device the tensors are on:
    --device=cuda:1 must make GPU 1 current, or the log-prob kernel reads another GPU's memory."""
    made_current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", made_current.append)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    precision = torch.get_float32_matmul_precision()
    try:
        ddp.device_setup("cuda:1")
        assert made_current == [torch.device("cuda", 1)]
        ddp.device_setup("cuda")  # no index: the current device stays (torchrun's rank sets its own)
        assert made_current == [torch.device("cuda", 1)]
    finally:
        torch.set_float32_matmul_precision(precision)


def fake_nvidia_smi(tmp_path, monkeypatch, output, exit_code=0):
    """An nvidia-smi first on PATH that prints output (whatever its arguments) and exits with exit_code."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'END'\n{output}END\nexit {exit_code}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_a_gpu_that_torch_cannot_use_stops_the_run_instead_of_a_quiet_cpu_one(tmp_path, monkeypatch):
    """PyPI's torch for Linux is a build for a recent CUDA: on an older driver torch sees no GPU,
    and "auto" would train the CPU preset on the CPU of a GPU machine. nvidia-smi tells, and the
    message names this torch release built for another CUDA (no copy of requirements.txt's pin)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fake_nvidia_smi(tmp_path, monkeypatch, "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0b1c)\n")
    assert ddp.nvidia_smi_gpus() == ["GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0b1c)"]
    for device in ("auto", "cuda", "cuda:1"):
        with pytest.raises(ValueError) as error:
            ddp.device_setup(device)
        message = str(error.value)
        assert "nvidia-smi lists 1 GPU(s) (GPU 0: NVIDIA H100" in message and torch.__version__ in message
        release = torch.__version__.split("+")[0]
        assert f"pip install torch=={release} --index-url https://download.pytorch.org/whl/cu126" in message
        assert "--device=cpu" in message
    assert ddp.device_setup("cpu")[0] == "cpu"  # the CPU, asked for deliberately
    # nvidia-smi present but no GPU to talk to (no driver loaded): nothing to say, the CPU it is
    fake_nvidia_smi(tmp_path, monkeypatch, "NVIDIA-SMI has failed because it couldn't communicate with "
                                           "the NVIDIA driver.\n", exit_code=9)
    assert ddp.nvidia_smi_gpus() == [] and ddp.device_setup("auto")[0] == "cpu"


def test_setup_outside_torchrun_is_one_rank_on_the_device_it_was_given(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    rank, world_size, device, autocast = ddp.setup("cpu", "bfloat16")
    assert (rank, world_size, device) == (0, 1, "cpu") and autocast.fast_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be"):
        ddp.setup("cpu", "float16")
