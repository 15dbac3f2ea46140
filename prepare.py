"""
prepare.py: writes data/, everything train.py and eval.py read, deterministically from a seed.

    python prepare.py                                  # the default size
    python prepare.py --n_train=300 --n_ir_groups=50   # a small world for a quick try
    python prepare.py --data_dir=/tmp/d --seed=7       # any module global below can be set so
    python path/to/prepare.py --data_dir=d             # from any directory: d is ./d

  data/tasks_{train,val,test}.jsonl  one translation task per line: "id", "program_id", "src_lang",
        "tgt_lang", "source", "reference", "tests", "prompt", "n_args". Every program is translated
        from each source language (python, cpp) into each other language (the RL targets, the
        held-out ones and C, the GEPO source language); train.py keeps the RL targets for RL.
        Splits are by program: a program (identical Python text) is in one split only.
  data/ir_groups.jsonl  GEPO groups built by ir.py from training programs: "program_id",
        "c_source", "prompt", "winners", "winner_levels", "losers", "tests", "n_args".
  data/ir_groups_val.jsonl  the same from val programs, which training never sees: eval.py's
        IR-equivalence probe measures what GEPO learnt on them.
  data/tokenizer.tiktoken, data/meta.json  the byte-level BPE of tokenizer.py (tiktoken's file
        format) learnt on the training programs in every language and on their IRs; meta.json
        (pat_str, special tokens, sizes, the settings) is written last: its presence means data/
        is complete.

Running it again with the same settings rewrites identical files. Work is spread over `workers`
processes. Toolchain needed: clang (for the IR groups).
"""
import collections
import json
import math
import os
import sys
import time
import zlib
from multiprocessing import Pool

import numpy as np

import ir
import tasks
import tokenizer
from configurator import configure

# ----------------------------------------------------------------------------- configuration
data_dir = "data"
seed = 1337
n_train = 4000          # programs in the train split (val, test below); each gives 18 tasks (2 sources x 9 targets)
n_val = 200
n_test = 200
n_ir_groups = 1000      # GEPO groups, from training programs
n_ir_groups_val = 100   # held-out groups, from val programs (for the probe, never trained on)
vocab_size = 1024       # cap on the BPE vocabulary, special tokens included (merges run out near 745)
min_statements = 3      # difficulty: statements per program (nested ones included) ...
max_statements = 7
max_depth = 2           # ... and how deep if/for/while may nest
n_tests = 7             # unit tests per program
workers = 2
ir_batch = 64           # programs per ir.make_groups call: one clang run per level per batch
                        # (64 takes 30% less CPU than 24; ~99% of programs give a group)


# ----------------------------------------------------------------------------- programs

def make_program(job):
    """Program number `index` of the stream: its tests and its text in every language. (Settings
    travel with the job: a worker process need not share this module's globals.)"""
    index, settings = job
    program, tests = tasks.generate(f"{settings['seed']}:{index}", settings["min_statements"],
                                    settings["max_statements"], settings["max_depth"], settings["n_tests"])
    return dict(index=index, n_args=program.n_args, tests=tests,
                code={lang: tasks.render(program, lang) for lang in tasks.LANGS})


def generate_programs(pool, wanted, settings):
    """The first `wanted` distinct programs of the seeded stream (duplicates are skipped, so that
    no program can land in two splits)."""
    programs, seen, start = [], set(), 0
    while len(programs) < wanted:
        batch = wanted - len(programs) + 16  # a few spare for the odd duplicate
        jobs = [(index, settings) for index in range(start, start + batch)]
        for p in pool.imap(make_program, jobs, chunksize=64):
            if p["code"]["python"] not in seen and len(programs) < wanted:
                seen.add(p["code"]["python"])
                programs.append(p)
        start += batch
    return programs


def program_tasks(p):
    """The translation tasks of one program: every source language into every other language."""
    program_id = f"p{p['index']:06d}"
    return [dict(id=f"{program_id}:{src}->{tgt}", program_id=program_id, src_lang=src, tgt_lang=tgt,
                 source=p["code"][src], reference=p["code"][tgt], tests=p["tests"],
                 prompt=tasks.make_prompt(src, p["code"][src], tgt), n_args=p["n_args"])
            for src in tasks.SOURCE_LANGS for tgt in tasks.LANGS if tgt != src]


# ----------------------------------------------------------------------------- IR groups

def make_ir_groups(job):
    """ir.make_groups on a batch of programs; each group is seeded by its own program."""
    programs, seed = job
    jobs = [(p["code"]["c"], p["tests"], p["n_args"], zlib.crc32(f"{seed}:ir:{p['index']}".encode()))
            for p in programs]
    groups = ir.make_groups(jobs)
    return [dict(program_id=f"p{p['index']:06d}", c_source=p["code"]["c"],
                 prompt=tasks.make_prompt("c", p["code"]["c"], "llvm"), winners=g["winners"],
                 winner_levels=g["winner_levels"], losers=g["losers"], tests=p["tests"], n_args=p["n_args"])
            for p, g in zip(programs, groups) if g is not None]


def build_ir_groups(pool, programs, wanted, split):
    """The first `wanted` groups of a split's programs, in program order. Batches run in parallel,
    in rounds sized to what is still missing (~99% of programs give a group), so no work is cut
    off mid-way."""
    batches = [(programs[i:i + ir_batch], seed) for i in range(0, len(programs), ir_batch)]
    groups, done = [], 0
    while len(groups) < wanted and done < len(batches):
        round_size = max(workers, math.ceil((wanted - len(groups)) / (0.95 * ir_batch)))
        for batch_groups in pool.imap(make_ir_groups, batches[done:done + round_size]):
            groups += batch_groups
            print(f"IR groups ({split}): {min(len(groups), wanted)}/{wanted}", flush=True)
        done += round_size
    if len(groups) < wanted:
        print(f"warning: only {len(groups)} IR groups from {len(programs)} {split} programs "
              f"(wanted {wanted}); raise n_{split} for more")
    return groups[:wanted]


# ----------------------------------------------------------------------------- writing

def write_jsonl(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)


def percentiles(values):
    p = np.percentile(values, [50, 90, 99]).astype(int) if values else [0, 0, 0]
    return f"p50 {p[0]:4d}  p90 {p[1]:4d}  p99 {p[2]:4d}  max {max(values, default=0):4d}"


def main():
    t_start = time.time()
    try:
        ir.require_clang()
    except RuntimeError as e:
        raise SystemExit(f"prepare.py: {e}")
    if not data_dir.strip():
        raise SystemExit("prepare.py: data_dir is empty: name the directory to write, e.g. --data_dir=data")
    # a relative data_dir is read from the current directory, like any path on a command line
    print(f"writing the data to {os.path.abspath(data_dir)}/", flush=True)
    os.makedirs(data_dir, exist_ok=True)
    meta_path = os.path.join(data_dir, "meta.json")
    if os.path.exists(meta_path):
        os.remove(meta_path)  # data/ counts as complete only once meta.json is back
    timings = {}
    with Pool(workers) as pool:
        t0 = time.time()
        settings = dict(seed=seed, min_statements=min_statements, max_statements=max_statements,
                        max_depth=max_depth, n_tests=n_tests)
        programs = generate_programs(pool, n_val + n_test + n_train, settings)
        # val and test come first in the stream, so they stay the same when n_train changes
        splits = {"val": programs[:n_val], "test": programs[n_val:n_val + n_test], "train": programs[n_val + n_test:]}
        for name, split in splits.items():
            write_jsonl(os.path.join(data_dir, f"tasks_{name}.jsonl"), [t for p in split for t in program_tasks(p)])
        timings["programs and tasks"] = time.time() - t0
        print(f"programs: {len(programs)} ({timings['programs and tasks']:.1f}s)")

        t0 = time.time()
        groups = build_ir_groups(pool, splits["train"], n_ir_groups, "train")
        write_jsonl(os.path.join(data_dir, "ir_groups.jsonl"), groups)
        timings["IR groups (train)"], t0 = time.time() - t0, time.time()
        val_groups = build_ir_groups(pool, splits["val"], n_ir_groups_val, "val")
        write_jsonl(os.path.join(data_dir, "ir_groups_val.jsonl"), val_groups)
        timings["IR groups (val)"] = time.time() - t0

    t0 = time.time()
    corpus = [p["code"][lang] for p in splits["train"] for lang in tasks.LANGS]
    corpus += [text for g in groups for text in g["winners"] + g["losers"]]
    corpus += [tasks.make_prompt(src, "", tgt) for src in tasks.LANGS for tgt in tasks.LANGS + ("llvm",)]
    bpe = tokenizer.train(corpus, vocab_size, markers=tasks.MARKERS)
    bpe.save(data_dir)
    timings["tokenizer"] = time.time() - t0

    meta = dict(vocab_size=bpe.n_vocab, special_tokens=bpe.special_tokens, pat_str=bpe.pat_str,
                tokenizer_file=tokenizer.TOKENIZER_FILE, langs=tasks.LANGS, source_langs=tasks.SOURCE_LANGS,
                rl_targets=tasks.RL_TARGETS, heldout_targets=tasks.HELDOUT_TARGETS, seed=seed,
                programs={name: len(split) for name, split in splits.items()},
                tasks={name: len(split) * len(program_tasks(split[0])) if split else 0 for name, split in splits.items()},
                ir_groups=len(groups), ir_groups_val=len(val_groups),
                settings=dict(n_train=n_train, n_val=n_val, n_test=n_test, n_ir_groups=n_ir_groups,
                              n_ir_groups_val=n_ir_groups_val,
                              vocab_size=vocab_size, min_statements=min_statements, max_statements=max_statements,
                              max_depth=max_depth, n_tests=n_tests, ir_max_chars=ir.MAX_IR_CHARS,
                              ir_max_losers=ir.MAX_LOSERS))
    tmp = meta_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, meta_path)
    print_summary(splits, groups, meta, timings, time.time() - t_start)


def print_summary(splits, groups, meta, timings, total):
    enc = tokenizer.load(data_dir)
    print(f"\n=== data written to {os.path.abspath(data_dir)}/ (seed {seed})")
    print("programs: " + ", ".join(f"{name} {len(s)}" for name, s in splits.items())
          + f"; tasks per program: {len(tasks.SOURCE_LANGS)} sources x {len(tasks.LANGS) - 1} targets")
    print("tasks per language pair (train / val / test):")
    for src in tasks.SOURCE_LANGS:
        row = "  ".join(f"{tgt} {len(splits['train'])}/{len(splits['val'])}/{len(splits['test'])}"
                        for tgt in tasks.LANGS if tgt != src)
        print(f"  {src} -> {row}")
    saturated = " (every distinct chunk is already one token)" if meta["vocab_size"] < vocab_size else ""
    print(f"tokenizer: {meta['vocab_size']} tokens{saturated}, {len(meta['special_tokens'])} of them special; "
          f"tokens per function (train split):")
    train = splits["train"]
    for lang in tasks.LANGS:
        lengths = [len(enc.encode(p["code"][lang])) for p in train]
        chars = sum(len(p["code"][lang]) for p in train)
        print(f"  {lang:10s} {percentiles(lengths)}   {chars / max(1, sum(lengths)):.2f} chars/token")
    sft = [len(enc.encode(t["prompt"] + t["reference"])) + 1
           for p in train[:500] for t in program_tasks(p)]
    print(f"  SFT example (prompt + completion + EOT), first 500 programs: {percentiles(sft)}")
    if groups:
        winner_tokens = [len(enc.encode(w)) for g in groups for w in g["winners"]]
        loser_tokens = [len(enc.encode(l)) for g in groups for l in g["losers"]]
        prompt_tokens = [len(enc.encode(g["prompt"])) for g in groups]
        n_w = collections.Counter(len(g["winners"]) for g in groups)
        n_l = collections.Counter(len(g["losers"]) for g in groups)
        print(f"IR groups: {len(groups)} from train programs, {meta['ir_groups_val']} from val programs "
              f"(held out); train: winners per group {dict(sorted(n_w.items()))}, "
              f"losers per group {dict(sorted(n_l.items()))}")
        print(f"  winner IR tokens  {percentiles(winner_tokens)}")
        print(f"  loser IR tokens   {percentiles(loser_tokens)}")
        print(f"  C prompt tokens   {percentiles(prompt_tokens)}")
    print("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()) + f"; total {total:.1f}s")


if __name__ == "__main__":
    configure(globals(), sys.argv[1:])
    main()
