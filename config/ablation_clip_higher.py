# A lever row: the preset with DAPO's clip-higher, eq. 5's upper clip at 1.28 (Skywork-OR1 found
# 0.25 helped and 0.28 the edge of stable; the lower clip stays at 1 - clip_eps = 0.8).
#   python ablation.py --sft_ckpt=out/sft.pt --rows='["sft","rl_gepo","clip_higher"]' --comparisons='[["clip_higher","rl_gepo"]]'
epsilon_high = 0.28
