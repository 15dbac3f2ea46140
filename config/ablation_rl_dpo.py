# The paper's Table 4, row 3: + REINFORCE++ + DPO (one winner and one loser IR per group, drawn afresh each step).
#   python train.py config/ablation_rl_dpo.py --sft_ckpt=out/sft.pt --out_dir=out/ablation_rl_dpo
pref_loss = "dpo"
