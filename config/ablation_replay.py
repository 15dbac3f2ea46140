# A lever row: the preset with replay of verified successes (train.py's replay_successes, RLEP):
# a stored passing completion of the task replaces one sample of each group that failed G times.
#   python ablation.py --sft_ckpt=out/sft.pt --rows='["sft","rl_gepo","replay"]' --comparisons='[["replay","rl_gepo"]]'
replay_successes = True
