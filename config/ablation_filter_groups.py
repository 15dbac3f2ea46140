# A lever row: the preset with DAPO's dynamic sampling (train.py's filter_groups): up to two
# rounds of 32 prompts a step, the groups whose rewards differ kept, the batch refilled to 32.
#   python ablation.py --sft_ckpt=out/sft.pt --rows='["sft","rl_gepo","filter_groups"]' --comparisons='[["filter_groups","rl_gepo"]]'
filter_groups = True
max_num_gen_batches = 2
