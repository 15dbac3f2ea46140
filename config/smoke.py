# Both stages in a couple of minutes on 2 CPU cores: a wiring check, not a result (the tests use it).
#   python train.py config/smoke.py
out_dir = "out/smoke"
n_layer = 2
n_head = 2
n_embd = 64
sft_steps = 40
sft_batch_size = 8
rl_steps = 4
prompts_per_step = 2
group_size = 4
max_new_tokens = 96
ppo_epochs = 2
gepo_groups_per_step = 1
ckpt_interval = 2
