"""Tests of tasks.py: every rendering, in its harness, compiled and run, prints exactly what the
Python reference computed; the generator is deterministic and keeps to its rules."""
import dataclasses
import random
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

import reward
import tasks
from tasks import Assign, BinOp, Const, For, If, Program, Return, Var, While


def run_all_languages(seeds):
    """(seed, lang, why) for every rendering that does not print its expected outputs."""
    programs = {seed: tasks.generate(seed) for seed in seeds}

    def check(job):
        seed, lang = job
        program, tests = programs[seed]
        code = tasks.render(program, lang)
        stdin = "".join(line + "\n" for line, _ in tests)  # all tests of a program in one run
        expected = "".join(out + "\n" for _, out in tests)
        result = reward.execute(tasks.harness(code, lang, program.n_args), lang, stdin)
        if result.status != "ok" or result.stdout != expected:
            return seed, lang, f"{result.status}\n{code}\nstdin:\n{stdin}expected:\n{expected}" \
                               f"got:\n{result.stdout}\n{result.stderr[-2000:]}"
        return None

    jobs = [(seed, lang) for seed in seeds for lang in tasks.LANGS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return [failure for failure in pool.map(check, jobs) if failure]


def test_every_rendering_prints_the_expected_outputs():
    failures = run_all_languages(range(50))
    assert not failures, failures[0][2]


@pytest.mark.slow
def test_every_rendering_prints_the_expected_outputs_many():
    failures = run_all_languages(range(1000, 1150))
    assert not failures, failures[0][2]


def test_python_rendering_agrees_with_the_evaluator_in_process():
    """Many more programs than the compiled tests can afford: exec the Python text directly."""
    for seed in range(2000):
        program, tests = tasks.generate(f"inproc{seed}")
        scope = {}
        exec(tasks.render(program, "python"), scope)
        for line, expected in tests:
            assert str(scope["f"](*map(int, line.split()))) == expected, tasks.render(program, "python")


def test_generator_is_deterministic():
    for seed in (0, 1, "x", 12345):
        assert tasks.generate(seed) == tasks.generate(seed)
    assert len({tasks.render(tasks.generate(seed)[0], "python") for seed in range(50)}) > 45


def test_tests_are_valid_and_discriminating():
    for seed in range(300):
        program, tests = tasks.generate(seed, n_tests=6)
        assert len(tests) == 6 and len({line for line, _ in tests}) == 6
        assert len({out for _, out in tests}) >= tasks.MIN_DISTINCT_OUTPUTS
        for line, out in tests:
            args = [int(v) for v in line.split()]
            assert len(args) == program.n_args
            assert all(tasks.INPUT_RANGE[0] <= v <= tasks.INPUT_RANGE[1] for v in args)
            assert tasks.INT32_MIN <= int(out) <= tasks.INT32_MAX


def test_values_outside_int32_and_negative_dividends_are_out_of_domain():
    # x = a * a; x = x * x; x = x * x  (a**8): fine for small a, beyond int32 from |a| = 15
    power = Program(1, (Assign("x", BinOp("*", Var("a"), Var("a")), True),
                        Assign("x", BinOp("*", Var("x"), Var("x")), False),
                        Assign("x", BinOp("*", Var("x"), Var("x")), False), Return(Var("x"))))
    assert tasks.evaluate(power, (14,)) == 14**8
    with pytest.raises(tasks.OutOfDomain):
        tasks.evaluate(power, (15,))
    # an intermediate value counts too, even when the result is small again
    dip = Program(1, (Assign("x", BinOp("-", BinOp("*", Var("a"), Const(10**9)), Var("a")), True), Return(Var("x"))))
    with pytest.raises(tasks.OutOfDomain):
        tasks.evaluate(dip, (3,))
    halve = Program(1, (Return(BinOp("/", Var("a"), Const(2))),))
    assert tasks.evaluate(halve, (7,)) == 3
    with pytest.raises(tasks.OutOfDomain):
        tasks.evaluate(halve, (-7,))  # -4 in Python, -3 in C: not a shared meaning
    # and make_tests only keeps inputs inside the domain
    tests = tasks.make_tests(power, random.Random(0), n_tests=5)
    assert tests is not None and all(abs(int(line)) < 15 for line, _ in tests)


def test_difficulty_knobs():
    def depth(stmts):
        return max([1 + max(depth(getattr(s, f, ())) for f in ("then", "orelse", "body"))
                    for s in stmts if isinstance(s, (If, For, While))] + [0])

    for seed in range(100):
        flat, _ = tasks.generate(seed, min_statements=2, max_statements=3, max_depth=0)
        assert depth(flat.body) == 0 and 3 <= len(flat.body) <= 4  # statements + the return
        nested, _ = tasks.generate(seed, max_depth=1)
        assert depth(nested.body) <= 1


def test_harness_for_a_c_prototype_links_f_from_elsewhere(tmp_path):
    program, tests = tasks.generate(7)
    main = tasks.harness("int f(" + ", ".join(f"int {a}" for a in tasks.ARG_NAMES[:program.n_args]) + ");",
                         "c", program.n_args)
    (tmp_path / "main.c").write_text(main)
    (tmp_path / "f.c").write_text(tasks.render(program, "c"))
    subprocess.run(["gcc", "main.c", "f.c", "-o", "prog"], cwd=tmp_path, check=True)
    out = subprocess.run(["./prog"], cwd=tmp_path, input="".join(line + "\n" for line, _ in tests),
                         capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:-1] == [expected for _, expected in tests]


def test_defines_f():
    program, _ = tasks.generate(3)
    for lang in tasks.LANGS:
        code = tasks.render(program, lang)
        assert tasks.defines_f(code, lang), lang
        assert not tasks.defines_f(code.replace(" f(", " g(").replace("f()", "g()"), lang), lang
        assert not tasks.defines_f("", lang)
    assert not tasks.defines_f("int f(int a, int b);", "c")  # a prototype defines nothing
    assert tasks.defines_f("define i32 @f(i32 %0) {\n  ret i32 %0\n}", "llvm")
    assert not tasks.defines_f("declare i32 @f(i32)", "llvm")
    with pytest.raises(ValueError, match="unknown language"):
        tasks.defines_f("def f(a): return a", "cobol")


def test_prompt_format_and_bad_languages():
    prompt = tasks.make_prompt("python", "def f(a):\n    return a", "cpp")
    assert prompt == "<|translate|>python\ndef f(a):\n    return a\n<|to|>cpp\n"
    assert tasks.make_prompt("c", "int f(int a) { return a; }", "llvm").endswith("<|to|>llvm\n")
    for bad in (lambda: tasks.make_prompt("python", "", "cobol"), lambda: tasks.render(tasks.generate(0)[0], "cobol"),
                lambda: tasks.harness("", "cobol", 1)):
        with pytest.raises(ValueError, match="unknown language"):
            bad()
    with pytest.raises(ValueError, match="n_args"):
        tasks.harness("", "c", 4)


def test_the_heaviest_program_executes_as_many_statements_as_a_call_may():
    program, tests = tasks.heaviest()
    assert len(tests) == 7 and len({out for _, out in tests}) >= tasks.MIN_DISTINCT_OUTPUTS
    assert all(str(tasks.evaluate(program, (int(arg),))) == out for arg, out in tests)
    first, loop, last = program.body
    longer = dataclasses.replace(program, body=(first, dataclasses.replace(loop, stop=tasks.Const(loop.stop.value + 1)), last))
    with pytest.raises(tasks.OutOfDomain, match="too many steps"):
        tasks.evaluate(longer, (1,))
