"""sft.py: the SFT examples end with end-of-text, only what fits the block is kept, a held-out
sample spreads over its split, a batch is of one kind with -1 on what is not predicted, and the
validation loss is the mean next-token loss over the completion tokens alone."""
import random
from contextlib import nullcontext

import torch

import sft
import tasks
import tokenizer
from model import GPT, GPTConfig

TASKS = [dict(prompt=f"translate program {i} to go", reference=f"func f{i}() int {{ return {i} }}") for i in range(12)]
IR_GROUPS = [dict(prompt=f"int f{i}(void) {{ return {i}; }}", winners=[f"define i32 @f{i}() {{ ret i32 {i} }}",
                                                                     f"define i32 @f{i}() #0 {{ ret i32 {i} }}"])
             for i in range(3)]


def tok():
    texts = [t["prompt"] + t["reference"] for t in TASKS] + [g["prompt"] + w for g in IR_GROUPS for w in g["winners"]]
    return tokenizer.train(texts, vocab_size=300, markers=tasks.MARKERS)


def test_pairs_end_with_end_of_text_and_each_winner_is_an_example():
    t = tok()
    translations, irs = sft.pairs(t, TASKS, IR_GROUPS)
    assert len(translations) == len(TASKS) and len(irs) == sum(len(g["winners"]) for g in IR_GROUPS)
    assert translations[0] == (t.encode(TASKS[0]["prompt"]), t.encode(TASKS[0]["reference"]) + [t.eot])
    assert t.decode(irs[1][1][:-1]) == IR_GROUPS[0]["winners"][1] and irs[1][1][-1] == t.eot


def test_fitting_keeps_what_fits_the_block_and_spread_samples_the_whole_list():
    examples = [([0] * n, [1] * 3) for n in range(1, 11)]  # 4 to 13 tokens
    assert [len(p) + len(c) for p, c in sft.fitting(examples, 8)] == [4, 5, 6, 7, 8]
    assert sft.spread(list(range(100)), 4) == [0, 25, 50, 75]
    assert sft.spread(list(range(3)), 10) == [0, 1, 2]


def test_a_batch_is_of_one_kind_and_predicts_the_completions_only():
    t = tok()
    translations, irs = sft.pairs(t, TASKS, IR_GROUPS)
    ir_completions = {tuple(c) for _, c in irs}
    kinds = set()
    rng = random.Random(0)
    for _ in range(20):
        idx, targets = sft.batch(rng, translations, irs, ir_share=0.5, batch_size=4, eot=t.eot, device="cpu")
        predicted = [target[target >= 0].tolist() for target in targets]  # the completions, end-of-text included
        assert all(p and p[-1] == t.eot for p in predicted)
        kinds.add(tuple(tuple(p) in ir_completions for p in predicted))
    assert (True,) * 4 in kinds and (False,) * 4 in kinds and len(kinds) == 2  # never a mixed batch
    assert sft.batch(random.Random(0), translations, [], 1.0, 4, t.eot, "cpu")[0].shape[0] == 4  # no IR pairs


def test_validation_loss_is_the_mean_over_completion_tokens_and_restores_training_mode():
    t = tok()
    translations, _ = sft.pairs(t, TASKS, IR_GROUPS)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=t.n_vocab, n_layer=1, n_head=2, n_embd=16))
    model.train()
    loss = sft.validation_loss(model, translations[:5], 2, t.eot, "cpu", nullcontext())
    assert model.training
    model.eval()
    with torch.no_grad():
        nll = []
        for prompt, completion in translations[:5]:
            ids = torch.tensor([prompt + completion])
            logits, _ = model(ids[:, :-1], targets=ids[:, 1:])
            logp = torch.log_softmax(logits[0, len(prompt) - 1:], dim=-1)
            nll += [-logp[i, token].item() for i, token in enumerate(completion)]
    assert abs(loss - sum(nll) / len(nll)) < 1e-5
    assert sft.validation_loss(model, [], 2, t.eot, "cpu", nullcontext()) is None
