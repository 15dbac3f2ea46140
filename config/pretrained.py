# The preset for a pretrained start (--init_from=DIR, a local Hugging Face GPT-2, Llama, Qwen2 or
# Qwen3 directory): train.py picks it whenever init_from is set.
#   python train.py --init_from=$HOME/models/Qwen3-0.6B
# It sets every key train.py marks "preset" but the model's shape (the pretrained model's own), and
# sft_lr and sft_warmup_frac; train.py's defaults hold for the rest.
#
# Learning rates far below from-scratch ones: the weights already encode language and code, and
# large steps erase it (the paper fine-tunes Qwen3-8B at 5e-7). A short SFT teaches the prompt
# format (sft_steps=0 starts RL from the pretrained model itself).
#
# Memory, for a ~0.6B model (Qwen3-0.6B: 0.6e9 parameters, 151k vocabulary) on one 80 GB GPU:
# fp32 weights 2.4 GB + gradients 2.4 GB + AdamW's two moments 4.8 GB = 9.6 GB for the policy, and
# 2.4 GB for the frozen reference; activations under bf16 autocast for an update micro-batch of
# micro_batch_tokens=8192 tokens: 28 layers x 8192 tokens x ~34 values of 1024 (attention and MLP
# inputs kept for backward) x 2 bytes ~ 16 GB; the log-prob kernel never holds the 8192 x 151k
# logits (5 GB in fp32). The rollout's KV cache: 16 x 8 rows x 672 positions x 28 layers x 2 x
# 1024 x 2 bytes ~ 10 GB. About 40 GB in all: it fits an 80 GB card with room to spare, and a 40 GB
# one with micro_batch_tokens=4096. On a 24 GB card the 0.6B model's 12 GB of fixed state leaves
# too little for its activations and cache; a ~135M Llama-form model (SmolLM2-135M: 2.2 GB of
# weights, gradients and Adam's state, 30 layers of 576) fits with these settings.
sft_steps = 300
sft_batch_size = 16
sft_lr = 3e-5
sft_warmup_frac = 0.1
rl_steps = 100
prompts_per_step = 16
group_size = 8
rl_lr = 1e-6
rl_warmup_frac = 0.03
