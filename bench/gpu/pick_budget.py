"""Prints a `[budgets.gpu]` table for the code-math recipe: the largest of a ladder of sizes
(or the size given as a third argument) whose estimated time, from the measured training and generation speeds of the first device
call, fits in the given seconds. Estimates: training tokens = (2 skills + DATA-MIX on both) x
examples x epochs x ~160 tokens (+5% for CAT); generation = 11 configurations x (target +
skill questions) x new tokens at the batch-16 rate."""
import json, sys

figures = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
seconds = float(sys.argv[2])
train_tps = next(f["tokens_per_s"] for f in figures if f["figure"] == "lora_train_step")
gen_tps = next(f["new_tokens_per_s"] for f in figures if f["figure"] == "generate_greedy" and f["batch"] == 16)
ladder = [  # examples, epochs, target questions, skill questions, new tokens
    (2000, 2, 200, 100, 200),  # = budget small
    (1000, 2, 200, 100, 200),
    (1000, 1, 100, 50, 200),
    (500, 1, 100, 50, 160),
    (250, 1, 60, 30, 160),
    (120, 1, 40, 20, 128),
]
if len(sys.argv) > 3:  # an explicit size: "examples epochs target skill new_tokens"
    ladder = [tuple(int(v) for v in sys.argv[3].split())]
for n, epochs, target, skill, new in ladder:
    train = 4 * n * epochs * 160 * 1.05 / train_tps
    gen = 11 * (target + skill) * new / gen_tps
    if train + gen <= seconds:
        break
print(f"# picked for {seconds:.0f} s: train ~{train:.0f} s at {train_tps:.0f} tok/s, generation ~{gen:.0f} s at {gen_tps:.0f} tok/s")
print("[budgets.gpu]")
print(f"train_examples = {n}\nepochs = {epochs}\nbatch_size = 8\nmax_len = 512\nlr = 3e-4\ncat_fraction = 0.05")
print(f"eval_limit = {target}\nskill_eval_limit = {skill}\nmax_new_tokens = {new}\nshots = 3")
