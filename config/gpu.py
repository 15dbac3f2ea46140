# The GPU preset: what `python train.py` trains on one CUDA GPU (preset=auto on a CUDA device).
#   python train.py                      # preset=auto with CUDA
#   torchrun --standalone --nproc_per_node=8 train.py   # the same global batches over 8 GPUs
# It sets every key train.py marks "preset" (the model's shape, the stages' steps and batches,
# rl_lr, rl_warmup_frac), and sft_lr; train.py's defaults hold for the rest.
#
# The model: 8 layers of 512 at the project's ~750-token vocabulary, 26.0M parameters (12 * 8 *
# 512^2 = 25.2M of them in the blocks). sft_lr 1e-3 lies between nanoGPT's 6e-4 for 124M parameters
# and the CPU preset's 2e-3 for 0.9M (smaller models take larger steps); 4000 steps of 64 sequences
# is ~25 passes over the 4000 training programs' translations, as the CPU preset's 1500 x 32 is ~12.
n_layer = 8
n_head = 8
n_embd = 512
block_size = 768
sft_steps = 4000
sft_batch_size = 64
sft_lr = 1e-3
# OORL: 64 prompts x 8 completions a step. A GPU samples them in about a second; compiling and
# running 512 programs keeps the machine's cores busy for longer than that, so the batch is sized
# by what the reward can score, and larger batches are what turned RL's gradient from noise into
# signal on the CPU. rl_lr 1e-5, a third of the CPU preset's for a model 30 times larger; a 3%
# warm-up as in the paper.
#
# The model's size follows from the same reasoning. Rows are scored as they end, while the rest
# decode (score_while_decoding, train.py's default), so a step takes about max(rollout, reward) +
# update: from the CPU measurements, ~0.4 s of rollout and ~0.3 s of update against 2-8 s of
# reward on 16 cores. While the rollout stays shorter than the reward, a larger model costs no
# wall time in the rollout and only its update's share elsewhere; the step line shows it ("time
# rollout ... reward after it ..."): a "reward after it" of seconds says the GPU waits and a
# larger model (n_layer, n_embd) is nearly free; one near 0 says the rollout has become the
# bound. Until a GPU run measures it, the preset stays at 26M.
rl_steps = 200
prompts_per_step = 64
group_size = 8
rl_lr = 1e-5
rl_warmup_frac = 0.03
