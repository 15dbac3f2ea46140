"""
ddp.py: where a process runs (its device and autocast), and data parallelism over the processes
started by torchrun, with torch.distributed as it is. train.py and eval.py set up both with setup().

    torchrun --standalone --nproc_per_node=2 train.py       # 2 ranks on one machine
    python train.py                                         # 1 process: every function is a no-op

torchrun starts N copies of the script and tells each its RANK, LOCAL_RANK and WORLD_SIZE in
the environment; setup() joins them into one process group (NCCL between GPUs, one GPU per rank;
gloo between CPU processes). Every rank holds the whole model. A step is data-parallel: each rank
computes the loss of its share of the global batch, divided by the *global* denominator (tokens,
or groups), so that summing the ranks' gradients gives exactly the gradient of one process on the
union batch; then every rank takes the same optimizer step and the weights stay identical.

This is what torch.nn.parallel.DistributedDataParallel does, written out: DDP sums gradients in
hooks that it arms in forward(), which assumes one forward per backward. An OORL loss spans
several forwards (the policy's completion tokens and the GEPO groups), so train.py all-reduces
the gradients itself, once per backward, in one flat buffer.
"""
import os
import shutil
import subprocess
from contextlib import nullcontext

import torch
import torch.distributed as dist


def setup(device="auto", dtype="auto"):
    """(rank, world_size, device, autocast) of this process: device_setup's device and autocast,
    and torchrun's process group joined if it started us: a CUDA device becomes this rank's own
    GPU (cuda:LOCAL_RANK); CPU ranks split the cores. A bad device or dtype is a ValueError."""
    device, autocast = device_setup(device, dtype)
    if "RANK" not in os.environ:
        return 0, 1, device, autocast
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank, local_world = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
    if torch.device(device).type == "cuda":
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=torch.device(device))
    else:
        # N ranks on one machine share its cores: N processes of all the cores each would fight
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local_world))
        dist.init_process_group("gloo")
    return rank, world_size, device, autocast


def device_setup(device="auto", dtype="auto"):
    """(device, autocast) for a run: "auto" is cuda when torch sees a GPU, else cpu. dtype "auto"
    is bfloat16 autocast on CUDA (any "cuda:N") and float32 elsewhere; "bfloat16" asks for
    bfloat16 autocast on a CPU too (how the tests check the reduced-precision paths without a
    GPU), "float32" for none. On CUDA float32 matmuls may use TF32 (as in nanoGPT).

    A GPU that nvidia-smi lists but torch cannot use (a torch build for a newer driver, or a
    CPU-only build) is an error, for "auto" too: quietly training on the CPU instead would run
    the CPU preset for hours on a machine with a GPU."""
    if (device == "auto" or torch.device(device).type == "cuda") and not torch.cuda.is_available():
        gpus = nvidia_smi_gpus()
        if gpus:
            build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(
                f"nvidia-smi lists {len(gpus)} GPU(s) ({gpus[0]}), but this torch ({torch.__version__}, {build}) "
                f"cannot use them: its CUDA build needs a newer NVIDIA driver than this machine's (PyPI's "
                f"torch for Linux is a build for a recent CUDA, which needs a recent driver), or it has no CUDA "
                f"at all. Install this torch release built for your driver's CUDA (nvidia-smi shows the CUDA "
                f"version the driver supports), e.g. `pip install torch=={torch.__version__.split('+')[0]} "
                f"--index-url https://download.pytorch.org/whl/cu126`, or pass --device=cpu to train on the "
                f"CPU deliberately.")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device_type = torch.device(device).type
    if device_type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: torch sees no CUDA GPU here (use --device=cpu or auto)")
        if torch.device(device).index is not None:
            # Triton launches its kernels on the current CUDA device, not on the device of the
            # tensors they are given: on "cuda:1" with the current device left at 0 the fused
            # log-prob kernel would read memory of the wrong GPU (an illegal address, which
            # poisons the CUDA context for the rest of the process)
            torch.cuda.set_device(torch.device(device))
        torch.set_float32_matmul_precision("high")  # TF32 tensor cores for the float32 matmuls left
    if dtype not in ("auto", "bfloat16", "float32"):
        raise ValueError(f"dtype must be 'auto', 'bfloat16' or 'float32'; got {dtype!r}")
    if dtype == "bfloat16" or (dtype == "auto" and device_type == "cuda"):
        return device, torch.autocast(device_type, dtype=torch.bfloat16)
    return device, nullcontext()


def nvidia_smi_gpus():
    """The GPUs `nvidia-smi -L` lists ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: ...)"), [] where there is
    no nvidia-smi or it fails (no driver loaded)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        done = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.startswith("GPU ")]


def active():
    return dist.is_available() and dist.is_initialized()


def world_size():
    return dist.get_world_size() if active() else 1


def rank():
    return dist.get_rank() if active() else 0


def local_world_size():
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def all_sum(tensor):
    """Sum a tensor over the ranks, in place (and return it)."""
    if active():
        dist.all_reduce(tensor)
    return tensor


def all_sum_float(value):
    """A Python number summed over the ranks (NCCL reduces GPU tensors only, gloo CPU ones)."""
    if not active():
        return float(value)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    return all_sum(torch.tensor(float(value), dtype=torch.float64, device=device)).item()


def sum_gradients(parameters):
    """Sum every parameter's gradient over the ranks, in one all-reduce of one flat buffer. A rank
    whose share of the batch is empty (or never reached a parameter) adds zeros: every rank's
    buffer must hold the same parameters in the same order."""
    if not active():
        return
    parameters = [p for p in parameters if p.requires_grad]
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_parameters(model):
    """Rank 0's weights on every rank (they are equal after a seeded init; this makes sure)."""
    if active():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def shard(items):
    """This rank's share of a list: items r, r + N, r + 2N, ... (all of them for one process).
    The shares differ by one item at most when N does not divide the list, and a rank gets none
    of a list shorter than N: a loss over a share is divided by the global count (len(items), or
    a count summed over the ranks), never by the share's own, and a figure is a global sum over a
    global count, never a mean of the ranks' means."""
    return items[rank()::world_size()]


def gather(obj):
    """Every rank's obj, in rank order (a one-item list for one process)."""
    if not active():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def teardown():
    if active():
        dist.destroy_process_group()


def barrier():
    """Wait here until every rank arrives (e.g. while rank 0 prepares the data)."""
    if active():
        dist.barrier()
