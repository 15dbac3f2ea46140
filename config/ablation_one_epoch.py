# A lever row: one PPO epoch a step instead of the preset's two, at the preset's wall-clock:
# the second epoch's policy forward and backward is ~1.3 of a ~9.75 s step (RESULTS.md, "one OORL
# step"), so 36 steps of two epochs take as long as ~41 of one.
#   python ablation.py --sft_ckpt=out/sft.pt --rows='["sft","rl_gepo","one_epoch"]' --comparisons='[["one_epoch","rl_gepo"]]'
ppo_epochs = 1
rl_steps = 41
