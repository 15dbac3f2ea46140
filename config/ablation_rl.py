# The paper's Table 4, row 2: + REINFORCE++ (on-policy RL only, no preference loss).
#   python train.py config/ablation_rl.py --sft_ckpt=out/sft.pt --out_dir=out/ablation_rl
pref_loss = "none"
