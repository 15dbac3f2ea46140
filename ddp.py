"""
ddp.py: data parallelism over processes started by torchrun, with torch.distributed as it is.

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

import torch
import torch.distributed as dist


def setup(device):
    """Join torchrun's process group if it started us. Returns (rank, world_size, device): a
    CUDA device becomes this rank's own GPU (cuda:LOCAL_RANK); CPU ranks split the cores."""
    if "RANK" not in os.environ:
        return 0, 1, device
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
    return rank, world_size, device


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
