# The CPU preset: what `python train.py` trains on a laptop without CUDA (2 cores in ~20 minutes,
# data preparation included). train.py picks it when the run's device is the CPU.
#   python train.py                      # preset=auto on a CPU
#   python train.py --preset=cpu         # the same, on any machine
# It sets every key train.py marks "preset" (the model's shape, the stages' steps and batches,
# rl_lr, rl_warmup_frac), and score_while_decoding; train.py's defaults hold for the rest.
#
# The model: 4 layers of 128 at the project's ~750-token vocabulary, 0.88M parameters. It learns
# the translation world's grammar in 1500 SFT steps of 32 pairs (~12 passes over the training
# programs' translations) and is small enough that a step of RL samples 256 completions in seconds.
n_layer = 4
n_head = 4
n_embd = 128
block_size = 512
sft_steps = 1500
sft_batch_size = 32
# OORL: large steps. The gradient of 8 x 8 completions is mostly sampling noise (the cosine of
# independent batches' gradients is ~0.04, see grad_cos in the step line) and Adam takes lr-sized
# steps in noise, so 32 prompts x 8 completions a step (64 x 4 and 128 x 2 taught no more over
# three seeds, at a higher cost a step: RESULTS.md); and a small rl_lr, since Adam moves every
# weight by about lr a step whatever the gradient's size (RESULTS.md: from this preset's SFT model
# 3e-5 gained and 1e-4 lost test pass@1). A step takes ~9 s on 2 cores (RESULTS.md, "one OORL
# step"), so 36 of them take ~5.5 of the ~8 minutes that data and SFT leave of 20 (56 steps gained
# the held-out targets more, not measurably the RL ones: RESULTS.md); a warm-up of 4 steps.
rl_steps = 36
prompts_per_step = 32
group_size = 8
rl_lr = 3e-5
rl_warmup_frac = 0.1
# Programs are scored after the rollout, not while it decodes: on 2 cores the compilers and the
# decoding share the same cores, and overlapping them measured 5-8% slower a step (RESULTS.md).
score_while_decoding = False
