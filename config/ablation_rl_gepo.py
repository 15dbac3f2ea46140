# The paper's Table 4, row 4: + REINFORCE++ + GEPO (the full OORL objective, eq. 10).
#   python train.py config/ablation_rl_gepo.py --sft_ckpt=out/sft.pt --out_dir=out/ablation_rl_gepo
pref_loss = "gepo"
