"""Tests for ir.py: every winner passes and every loser fails when compiled and run on its own
(not through ir.py's shared test binary), noise is gone, levels are deduplicated, mutations are
valid and really change the text, groups are deterministic, and a looping loser is cut short."""
import os
import random
import re
import resource
import signal
import subprocess
import tempfile

import pytest

import ir
import tasks

# Hand-written C functions with their Python twins (for the expected outputs): a loop with a
# min, a static helper (two functions in the -O0 IR), and abs() from stdlib.h (a declaration).
HAND_WRITTEN = [
    ("""int f(int a, int b) {
    int s = 0;
    for (int i = 0; i < (a < 6 ? a : 6); i++) {
        if (b > i) s += b - i; else s = s * 2 + 1;
    }
    return s;
}""", 2, lambda a, b: _loop(a, b)),
    ("""static int clamp(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

int f(int a, int b, int c) {
    int x = clamp(a, b, c) * 3;
    return x - (c % 4);
}""", 3, lambda a, b, c: (b if a < b else (c if a > c else a)) * 3 - (c % 4)),  # inputs >= 0: % agrees
    ("""#include <stdlib.h>

int f(int a) {
    int y = abs(a - 7) + 2;
    while (y > 10) y = y / 2;
    return y;
}""", 1, lambda a: _halve(abs(a - 7) + 2)),
]


def _loop(a, b):
    s = 0
    for i in range(min(a, 6)):
        s = s + b - i if b > i else s * 2 + 1
    return s


def _halve(y):
    while y > 10:
        y //= 2
    return y


def hand_program(index, seed=0):
    source, n_args, reference = HAND_WRITTEN[index]
    rng = random.Random(index)
    inputs = [[rng.randint(0, 12) for _ in range(n_args)] for _ in range(8)]
    tests = [[" ".join(map(str, args)), str(reference(*args))] for args in inputs]
    return source, tests, n_args, seed


def generated_program(seed):
    program, tests = tasks.generate(seed)
    return tasks.render(program, "c"), tests, program.n_args, seed


_HARNESS_DIR = tempfile.TemporaryDirectory(prefix="test_ir_")


def _plain_harness(n_args):
    """The C harness of tasks.py for f, compiled once per arity (it needs no change for IR)."""
    path = os.path.join(_HARNESS_DIR.name, f"main{n_args}.o")
    if not os.path.exists(path):
        prototype = "int f(" + ", ".join(f"int {name}" for name in "abc"[:n_args]) + ");"
        with open(path[:-2] + ".c", "w") as fh:
            fh.write(tasks.harness(prototype, "c", n_args))
        subprocess.run(["clang", "-w", "-c", path[:-2] + ".c", "-o", path], check=True)
    return path


def _limit_cpu(seconds):
    return lambda: resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))


def run_alone(ir_text, tests, n_args, cpu_seconds=2):
    """An independent check: this IR alone, linked with the plain C harness of tasks.py."""
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "f.ll"), "w") as fh:
            fh.write(ir_text)
        built = subprocess.run(["clang", "-w", "f.ll", _plain_harness(n_args), "-o", "prog"],
                               cwd=tmp, capture_output=True, text=True)
        if built.returncode != 0:
            return "compile_error"
        done = subprocess.run([os.path.join(tmp, "prog")], input="".join(f"{i}\n" for i, _ in tests),
                              capture_output=True, text=True, preexec_fn=_limit_cpu(cpu_seconds), timeout=120)
    if done.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout"
    return "pass" if done.returncode == 0 and done.stdout.split("\n")[:-1] == [o for _, o in tests] else "fail"


@pytest.fixture(scope="module")
def programs_and_groups():
    programs = [hand_program(i) for i in range(len(HAND_WRITTEN))] + [generated_program(s) for s in range(6)]
    return programs, ir.make_groups(programs)


def test_winners_pass_and_losers_fail_when_run_alone(programs_and_groups):
    programs, groups = programs_and_groups
    assert all(g is not None for g in groups)
    for (_, tests, n_args, _), group in zip(programs, groups):
        assert group["winners"] and group["losers"]
        assert len(group["losers"]) <= ir.MAX_LOSERS
        for winner in group["winners"]:
            assert tasks.defines_f(winner, "llvm")
            assert run_alone(winner, tests, n_args) == "pass"
        for loser in group["losers"]:
            assert run_alone(loser, tests, n_args) in ("fail", "timeout")
            assert loser not in group["winners"]
        assert len(set(group["losers"])) == len(group["losers"])


def test_levels_are_deduplicated(programs_and_groups):
    programs, groups = programs_and_groups
    by_level = ir.compile_to_ir([p[0] for p in programs])
    for ir_by_level, group in zip(by_level, groups):
        assert len(set(group["winners"])) == len(group["winners"])
        listed = [level for levels in group["winner_levels"] for level in levels]
        assert len(listed) == len(set(listed)) and set(listed) <= set(ir.LEVELS)
        for winner, levels in zip(group["winners"], group["winner_levels"]):
            assert all(ir_by_level[level] == winner for level in levels)
        # a level is missing only when its IR is over the length cap
        assert all(len(ir_by_level[level]) > ir.MAX_IR_CHARS for level in set(ir.LEVELS) - set(listed))
    # these small functions give the same IR at several levels, so some group must merge levels
    assert any(len(levels) > 1 for group in groups for levels in group["winner_levels"])


def test_noise_is_stripped_and_the_ir_still_compiles():
    source = hand_program(1)[0]
    ir_by_level = ir.compile_to_ir([source])[0]
    assert set(ir_by_level) == set(ir.LEVELS)
    for text in ir_by_level.values():
        for noise in ("!", "#", ";", "dso_local", "noundef", "align", "target ", "attributes",
                      "source_filename", "local_unnamed_addr", "__p0", "tail call"):
            assert noise not in text
        assert text.startswith("define i32 @f(i32 %0, i32 %1, i32 %2) {")
    assert "define internal i32 @clamp(" in ir_by_level["O0"]          # the helper comes along at -O0
    assert "declare i32 @abs(i32)" in ir.compile_to_ir([hand_program(2)[0]])[0]["O0"]  # and a declaration
    verdicts = ir.check_irs(list(ir_by_level.values()), hand_program(1)[1], 3)
    assert verdicts == ["pass"] * len(ir.LEVELS)


def test_a_batch_compiles_each_function_as_if_alone():
    sources = [hand_program(i)[0] for i in range(len(HAND_WRITTEN))] + [generated_program(s)[0] for s in range(4)]
    batch = ir.compile_to_ir(sources)
    assert batch[0] == ir.compile_to_ir(sources[:1])[0]
    assert batch[2] == ir.compile_to_ir(sources[2:3])[0]
    assert batch[5] == ir.compile_to_ir(sources[5:6])[0]


def test_every_mutation_changes_one_line_and_is_valid_ir():
    source, tests, n_args, _ = generated_program(2)
    for winner in ir.compile_to_ir([source])[0].values():
        mutated = ir.mutations(winner)
        assert {kind for kind, _, _ in mutated} >= {"opcode", "predicate", "constant"}
        for kind, text, _ in mutated:
            assert text != winner
            changed = [(a, b) for a, b in zip(winner.split("\n"), text.split("\n")) if a != b]
            assert len(changed) == 1 or kind == "minmax"
            if kind != "minmax":
                assert len(text.split("\n")) == len(winner.split("\n"))
        with tempfile.TemporaryDirectory() as tmp:
            _, compiles = ir.build_binary([text for _, text, _ in mutated], n_args, tmp)
        assert all(compiles)


def test_mutation_kinds_on_single_lines():
    def mutated(line):
        return {new for _, new in ir._line_mutations(line)}
    assert "  %5 = sub nsw i32 %3, %4" in mutated("  %5 = add nsw i32 %3, %4")
    assert "  %5 = sub nsw i32 %4, %3" in mutated("  %5 = sub nsw i32 %3, %4")       # operand swap
    assert "  %5 = srem i32 %3, 4" in mutated("  %5 = sdiv exact i32 %3, 4")         # exact dropped
    assert "  %5 = sdiv i32 %3, 0" not in mutated("  %5 = sdiv i32 %3, 1")            # no division by 0
    assert mutated("  %6 = icmp slt i32 %4, 7") >= {"  %6 = icmp sge i32 %4, 7", "  %6 = icmp sle i32 %4, 7",
                                                    "  %6 = icmp slt i32 %4, 8", "  %6 = icmp slt i32 %4, 6"}
    assert "  %7 = select i1 %6, i32 %2, i32 %1" in mutated("  %7 = select i1 %6, i32 %1, i32 %2")
    assert "  br i1 %9, label %12, label %10" in mutated("  br i1 %9, label %10, label %12")
    assert "  %8 = phi i32 [ 1, %2 ], [ %9, %7 ]" in mutated("  %8 = phi i32 [ 0, %2 ], [ %9, %7 ]")
    assert "  store i32 -1, i32* %5" in mutated("  store i32 0, i32* %5")
    assert "  %3 = shl i32 %0, 32" not in mutated("  %3 = shl i32 %0, 31")           # no over-wide shift
    assert mutated("  %9 = load i32, i32* %5") == set()
    text = "define i32 @f(i32 %0) {\n  %2 = call i32 @llvm.smax.i32(i32 %0, i32 3)\n  ret i32 %2\n}\n\n" \
           "declare i32 @llvm.smax.i32(i32, i32)"
    swapped = [t for kind, t, _ in ir.mutations(text) if kind == "minmax"]
    assert swapped == [text.replace("smax", "smin")]


def test_loop_steering_lines_are_found():
    source = "int f(int a) {\n    int s = 0;\n    for (int i = 0; i < a; i++) s = s * 3 + 1;\n    return s;\n}"
    for level, text in ir.compile_to_ir([source])[0].items():
        lines = text.split("\n")
        steering = [lines[i].strip() for i in sorted(ir._loop_control_lines(text))]
        # the loop test, the guard (where there is one) and the induction step i += 1 steer ...
        assert any(line.startswith("br i1") for line in steering), level
        assert any(re.fullmatch(r"%\d+ = add( nuw)?( nsw)? i32 %\d+, 1", line) for line in steering), level
        # ... the accumulator s = s * 3 + 1 does not: mutating it cannot make the loop run forever
        assert not any(" mul " in line or line.endswith(", 3") for line in steering), level


def test_groups_are_deterministic_and_independent_of_the_batch(programs_and_groups):
    programs, groups = programs_and_groups
    assert ir.make_groups(programs[1:4]) == groups[1:4]
    assert ir.make_group(*programs[3]) == groups[3]
    reseeded = ir.make_group(*programs[3][:3], seed=12345)
    assert reseeded["winners"] == groups[3]["winners"]
    assert reseeded["losers"] != groups[3]["losers"]


def test_a_looping_loser_is_cut_short_and_counts_as_failing(monkeypatch):
    source, tests, n_args, seed = hand_program(0)
    winner = ir.compile_to_ir([source])[0]["O0"]
    steps = re.findall(r"%\d+ = add nsw i32 %\d+, 1\n  store i32 %\d+, i32\* %\d+\n  br label %\d+\n\n", winner)
    looping = winner.replace(steps[-1], steps[-1].replace(", 1\n", ", 0\n"))  # the last one is i++: i += 0
    assert run_alone(looping, tests, n_args, cpu_seconds=1) == "timeout"
    assert ir.check_irs([looping], tests, n_args, cpu_seconds=0.3) == ["timeout"]
    monkeypatch.setattr(ir, "loser_candidates", lambda winners, rng, count: [looping])
    group = ir.make_group(source, tests, n_args, seed)
    assert group["losers"] == [looping]


def test_none_without_a_winner_or_a_loser(monkeypatch):
    source, tests, n_args, seed = hand_program(0)
    assert ir.make_group(source, tests, n_args, seed, max_chars=50) is None
    monkeypatch.setattr(ir, "loser_candidates", lambda winners, rng, count: [w + "\n" for w in winners])
    assert ir.make_group(source, tests, n_args, seed) is None  # the "mutations" all pass


def test_bad_input_is_a_clear_error(monkeypatch):
    source, tests, n_args, seed = hand_program(0)
    with pytest.raises(ValueError, match="n_args"):
        ir.make_group(source, tests, 4, seed)
    with pytest.raises(ValueError, match="no tests"):
        ir.make_group(source, [], n_args, seed)
    with pytest.raises(RuntimeError, match="cannot compile this C function"):
        ir.make_group("int f(int a) { return a +; }", tests, 1, seed)
    wrong = [[line, str(int(out) + 1)] for line, out in tests]
    with pytest.raises(RuntimeError, match="does not pass its own tests"):
        ir.make_group(source, wrong, n_args, seed)
    monkeypatch.setattr(ir.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="package `clang`"):
        ir.make_group(source, tests, n_args, seed)


@pytest.mark.slow
def test_many_generated_groups_hold_up_when_run_alone():
    programs = [generated_program(seed) for seed in range(100, 125)]
    groups = ir.make_groups(programs)
    assert sum(g is not None for g in groups) >= 20
    for (_, tests, n_args, _), group in zip(programs, groups):
        if group is None:
            continue
        assert all(len(text) <= ir.MAX_IR_CHARS for text in group["winners"])
        assert all(run_alone(winner, tests, n_args) == "pass" for winner in group["winners"])
        assert all(run_alone(loser, tests, n_args) in ("fail", "timeout") for loser in group["losers"])
