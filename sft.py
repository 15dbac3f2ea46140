"""
sft.py: stage 1's data, SFT warm-up before OORL. The examples are (prompt, completion) token lists
of the translation pairs (every source -> every target, the held-out targets included) and of the
C -> LLVM IR pairs; a batch is all of one kind; the validation loss is the next-token loss on
held-out pairs. train.py's run_sft is the loop that trains on them.

    translations, irs = sft.pairs(tok, train_tasks, ir_groups)
    idx, targets = sft.batch(rng, translations, irs, ir_share=0.15, batch_size=32, eot=tok.eot, device="cpu")
    val_loss = sft.validation_loss(policy, sft.spread(translations, 256), 32, tok.eot, "cpu", nullcontext())

Nothing to run here: tests/test_sft.py tests it, tests/test_train.py runs it end to end.
"""
import torch

import ddp
from model import pack


def pairs(tok, translation_tasks, ir_groups):
    """(prompt, completion) token lists: each task's prompt with its reference translation, and
    each IR group's C prompt with each of its equivalent IRs (its winners); every completion ends
    with end-of-text, which the model learns to emit."""
    translations = [(tok.encode(t["prompt"]), tok.encode(t["reference"]) + [tok.eot]) for t in translation_tasks]
    irs = [(tok.encode(g["prompt"]), tok.encode(ir) + [tok.eot]) for g in ir_groups for ir in g["winners"]]
    return translations, irs


def fitting(examples, block_size):
    """The examples whose prompt and completion fit in the model's block together."""
    return [e for e in examples if len(e[0]) + len(e[1]) <= block_size]


def spread(examples, n):
    """n examples spread over the list, the same at every call: a held-out split lists a
    program's pairs together, and its first n would be a few programs only."""
    return examples[::max(1, len(examples) // n)][:n]


def batch(rng, translations, irs, ir_share, batch_size, eot, device):
    """This rank's share of a global batch, as right-padded inputs and targets (-1 where there
    is nothing to predict: prompt and padding). A batch is all C -> IR (with probability
    ir_share) or all translations: an IR example is about twice as long as a translation, and a
    mixed batch would pad every translation to its length. Every rank draws the same global
    batch from the same generator and keeps its own share."""
    pool = irs if irs and rng.random() < ir_share else translations
    chosen = ddp.shard([rng.choice(pool) for _ in range(batch_size)])
    idx, targets, mask = pack([p for p, _ in chosen], [c for _, c in chosen], pad_id=eot)
    return idx.to(device), targets.masked_fill(~mask, -1).to(device)


@torch.no_grad()
def validation_loss(policy, examples, batch_size, eot, device, autocast):
    """The next-token loss over the completion tokens of held-out examples (nanoGPT's
    estimate_loss, on fixed examples), every rank a share; None without examples. The training
    batch's loss cannot show overfitting, nor the IR pairs apart from the translations."""
    if not examples:
        return None
    policy.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # summed loss, tokens
    share = ddp.shard(examples)
    for i in range(0, len(share), batch_size):
        chunk = share[i:i + batch_size]
        idx, targets, mask = pack([p for p, _ in chunk], [c for _, c in chunk], pad_id=eot)
        with autocast:
            _, loss = policy(idx.to(device), targets=targets.masked_fill(~mask, -1).to(device))
        tokens = mask.sum().item()
        total += torch.tensor([loss.item() * tokens, tokens], dtype=torch.float64, device=device)
    policy.train()
    total = ddp.all_sum(total)
    return (total[0] / total[1]).item()
