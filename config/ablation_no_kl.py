# A lever row: the preset without the KL term (beta_kl = 0, as DAPO and DeepCoder train), which
# also skips the reference model's forward over every rollout.
#   python ablation.py --sft_ckpt=out/sft.pt --rows='["sft","rl_gepo","no_kl"]' --comparisons='[["no_kl","rl_gepo"]]'
beta_kl = 0.0
