# The paper's Table 4, row 1: the SFT model alone (no RL). Evaluate out/sft.pt directly:
#   python train.py config/ablation_sft.py && python eval.py --ckpt=out/sft.pt
rl_steps = 0
