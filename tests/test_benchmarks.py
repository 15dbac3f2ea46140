"""Tests of benchmarks.py: reading MultiPL-E and HumanEval-X records (JSONL, gzip, parquet),
cutting completions, and the pass rule in every language, on small records made here in the
benchmarks' formats (never the published files)."""
import gzip
import json
import os

import pytest

import benchmarks

JAVA_IMPORTS = "import java.util.*;\nimport org.javatuples.*;\n"
CSHARP_USING = "using System;\nusing System.Diagnostics;\n"
GO_TESTS = """func TestAdd(t *testing.T) {
  candidate := add
\ttype test struct {
\t\tactual   interface{}
\t\texpected interface{}
\t}
   tests := []test{
     { actual: candidate(2, 3), expected: 5 },
     { actual: candidate(-1, 1), expected: 0 },
   }

\tfor i, tc := range tests {
\t\tt.Run(fmt.Sprintf("test num % d", i), func(t *testing.T) {
\t\t\tif fmt.Sprintf("%v", tc.actual) != fmt.Sprintf("%v", tc.expected) {
\t\t\t\tt.Errorf("expected '%s', got '%s'", tc.expected, tc.actual)
\t\t\t}
\t\t})
\t}
}
"""
# MultiPL-E records of one problem, add(a, b), as its harness's generator writes them per language;
# then completions: right, a wrong well-typed value, a throw, an exit with status 0 inside the function
MULTIPL_E = {
    "python": ("py", "def add(a: int, b: int) -> int:\n",
               "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n\n"
               "def test_check():\n    check(add)\n\ntest_check()\n", ["\ndef", "\n#", "\nif", "\nclass"],
               ("    return a + b\n", "    return a - b\n", "    raise ValueError(a)\n",
                "    import sys\n    sys.exit(0)\n")),
    "javascript": ("js", "function add(a, b){\n",
                   "const assert = require('node:assert');\n\n\nfunction test() {\n  let candidate = add;\n"
                   "  assert.deepEqual(candidate(2, 3),5);\n  assert.deepEqual(candidate(-1, 1),0);\n}\n\ntest();",
                   ["\nfunction ", "\n/*", "\n//", "\nconsole.log"],
                   ("  return a + b;\n}", "  return a - b;\n}", "  throw new Error('no');\n}", "  process.exit(0);\n}")),
    "typescript": ("ts", "function add(a: number, b: number): number {\n",
                   "declare var require: any;\nconst assert = require('node:assert');\n\n\nfunction test() {\n"
                   "  let candidate = add;\n  assert.deepEqual(candidate(2, 3),5);\n  assert.deepEqual(candidate(-1, 1),0);\n"
                   "}\n\ntest();", ["\nfunction ", "\n/*", "\n//", "\nclass"],
                   ("  return a + b;\n}", "  return a - b;\n}", "  throw new Error('no');\n}",
                    "  (globalThis as any).process.exit(0);\n  return 0;\n}")),
    "php": ("php", "<?php\nfunction add($a, $b) {\n",
            "function candidate(...$args) {\n    return add(...$args);\n}\n\nfunction test(): void {\n"
            "    if (candidate(2, 3) !== 5) { throw new Exception(\"Test failed!\"); }\n"
            "    if (candidate(-1, 1) !== 0) { throw new Exception(\"Test failed!\"); }\n}\n\ntest();",
            ["\nfunction", "\n?>", "\n//", "\n#"],
            ("    return $a + $b;\n}", "    return $a - $b;\n}", "    throw new Exception('no');\n}", "    exit(0);\n}")),
    # (expr: one of the commands MultiPL-E's Bash harness has)
    "bash": ("sh", "#!/bin/bash\n# $1 is an integer\n# $2 is an integer\nadd() {\n",
             "}\n\ncandidate() {\n    add \"$@\"\n}\n\nset -e\nrun_test() {\n    [[ $(candidate \"2\" \"3\") = \"5\" ]]\n"
             "    [[ $(candidate \"-1\" \"1\") = \"0\" ]]\n}\n\nrun_test", ["\n}"],
             ("    expr $1 + $2", "    expr $1 - $2", "    return 1", "    exit 0")),
    "lua": ("lua", "local function add(a, b)\n",
            "lu = require('luaunit')\n\nfunction test_humaneval()\nlocal candidate = add\n"
            "    lu.assertEquals(candidate(2, 3), 5)\n    lu.assertEquals(candidate(-1, 1), 0)\nend\n\n"
            "os.exit(lu.LuaUnit.run())", ["\nlocal", "\nfunction", "\n--", "\n\n"],
            ("    return a + b\nend", "    return a - b\nend", "    error('no')\nend", "    os.exit(0)\nend")),
    "cpp": ("cpp", "#include<assert.h>\n#include<bits/stdc++.h>\nlong add(long a, long b) {\n",
            "}\nint main() {\n    auto candidate = add;\n    assert(candidate((2), (3)) == (5));\n"
            "    assert(candidate((-1), (1)) == (0));\n}\n", ["\n}"],
            ("    return a + b;", "    return a - b;", "    throw std::runtime_error(\"no\");", "    exit(0);")),
    "java": ("java", JAVA_IMPORTS + "class Problem {\n    public static long add(long a, long b) {\n",
             "    }\n    public static void main(String[] args) {\n    assert(add((2l), (3l)) == (5l));\n"
             "    assert(add((-1l), (1l)) == (0l));\n    }\n\n}\n", ["\n    }\n"],
             ("        return Pair.with(a, b).getValue0() + b;", "        return a - b;",
              "        throw new RuntimeException(\"no\");", "        System.exit(0);\n        return 0;")),
    "csharp": ("cs", CSHARP_USING + "class Problem {\n    public static long Add(long a, long b) {\n",
               "    }\n    public static void Main(string[] args) {\n    Debug.Assert(Add((2L), (3L)) == (5L));\n"
               "    Debug.Assert(Add((-1L), (1L)) == (0L));\n    }\n\n}\n", ["\n    }\n"],
               ("        return a + b;", "        return a - b;", "        throw new Exception(\"no\");",
                "        Environment.Exit(0);\n        return 0;")),
    "rust": ("rs", "fn add(a: isize, b: isize) -> isize {\n",
             "}\n\nfn main() {\n    let candidate = add;\n    assert_eq!(candidate(2, 3), 5);\n"
             "    assert_eq!(candidate(-1, 1), 0);\n}\n", ["\n}"],
             ("    a + b", "    a - b", "    panic!(\"no\")", "    std::process::exit(0)")),
    "go": ("go_test.go", "package add_test\n\nimport (\n    \"testing\"\n    \"fmt\"\n    \"os\"\n)\n\n"
           "func add(a int, b int) int {\n", GO_TESTS, ["\nfunc", "struct", "\n// "],
           ("    _ = os.Args\n    return a + b\n}\n", "    _ = os.Args\n    return a - b\n}\n",
            "    _ = os.Args\n    panic(\"no\")\n}\n", "    os.Exit(0)\n    return 0\n}\n")),
}
FAST = ("python", "javascript", "php", "bash", "lua")  # the others need a compiler's start (or Go's warm-up)


def multipl_e_record(lang):
    short, prompt, tests, stops, _ = MULTIPL_E[lang]
    return dict(name=f"HumanEval_0_add_{short}", language=short, prompt=prompt, doctests="transform",
                original="", prompt_terminology="reworded", tests=tests, stop_tokens=stops)


def write_jsonl(path, rows, gzipped=False):
    with (gzip.open(path, "wt") if gzipped else open(path, "w")) as file:
        file.writelines(json.dumps(row) + "\n" for row in rows)
    return str(path)


def judge_languages(langs):
    jobs, expected = [], []
    for lang in langs:
        problem = benchmarks.to_problem(multipl_e_record(lang))
        right, wrong, throws, exits = MULTIPL_E[lang][4]
        jobs += [(problem, right), (problem, wrong), (problem, throws), (problem, exits)]
        expected += [(lang, "right", "passed"), (lang, "wrong", "failed"), (lang, "throws", "failed"),
                     (lang, "exits 0", "incomplete")]
    verdicts = benchmarks.judge(jobs)
    got = [(lang, what, verdict.status) for (lang, what, _), verdict in zip(expected, verdicts)]
    # a shell's exit inside $(...) leaves only the subshell: the comparison then fails the tests;
    # luaunit makes os.exit inside a test an error of that test
    expected = [(lang, what, "failed" if what == "exits 0" and lang in ("bash", "lua") else status)
                for lang, what, status in expected]
    assert got == expected, [(g, v.detail[:300]) for g, e, v in zip(got, expected, verdicts) if g != e]


def test_the_pass_rule_in_the_interpreted_languages():
    judge_languages(FAST)


@pytest.mark.slow
def test_the_pass_rule_in_the_compiled_languages():
    """Java and C#: a wrong value fails only because assertions are on (-ea, DEBUG defined)."""
    judge_languages([lang for lang in MULTIPL_E if lang not in FAST])


def test_a_program_that_prints_what_a_harness_prints_and_exits_0_fails():
    problem = benchmarks.to_problem(multipl_e_record("python"))
    forged = "    import os\n    print('PASS')\n    print('All tests passed')\n    os._exit(0)\n"
    wrong_then_exit = "    return a - b\nimport atexit, os\natexit.register(lambda: os._exit(0))\n"
    verdicts = benchmarks.judge([(problem, forged), (problem, wrong_then_exit), (problem, MULTIPL_E["python"][4][0])])
    # (the second fails its tests, then forces exit status 0: the reference harness would pass it)
    assert [v.status for v in verdicts] == ["incomplete", "incomplete", "passed"], verdicts


def test_a_completion_that_holds_the_tests_own_words_is_judged_not_refused():
    lua = benchmarks.to_problem(multipl_e_record("lua"))
    verdict, = benchmarks.judge([(lua, "    return a + b\nend\nlocal quoted = 'os.exit(lu.LuaUnit.run())'")])
    assert verdict.status == "passed", verdict


def test_a_type_error_in_typescript_is_a_compile_error():
    problem = benchmarks.to_problem(multipl_e_record("typescript"))
    verdict, = benchmarks.judge([(problem, '  return "five";\n}')])
    assert verdict.status == "compile_error" and "not assignable" in verdict.detail, verdict


# ----------------------------------------------------------------------------- HumanEval-X

HUMANEVAL_X = {
    "python": ("Python/0", "def add(a, b):\n    \"\"\"a + b\"\"\"\n", "def add(a, b):\n", "    return a + b\n",
               "\n\ndef check(add):\n    assert add(2, 3) == 5\n    assert np.sum([add(-1, 1)]) == 0\n\ncheck(add)", {}),
    "javascript": ("JavaScript/0", "/* a + b */\nconst add = (a, b) => {\n", "\nconst add = (a, b) => {\n",
                   "  return a + b\n}\n", "const testAdd = () => {\n  console.assert(add(2, 3) === 5)\n"
                   "  console.assert(add(-1, 1) === 0)\n}\n\ntestAdd()\n", {}),
    "cpp": ("CPP/0", "/* a + b */\n#include<stdio.h>\nusing namespace std;\nint add(int a, int b){\n",
            "#include<stdio.h>\nusing namespace std;\nint add(int a, int b){\n", "    return a + b;\n}\n",
            "#undef NDEBUG\n#include<assert.h>\nint main(){\n    assert (add(2, 3) == 5);\n    assert (add(-1, 1) == 0);\n}", {}),
    "java": ("Java/0", "import java.util.*;\nimport java.lang.*;\n\nclass Solution {\n    public int add(int a, int b) {\n",
             "import java.util.*;\nimport java.lang.*;\n\nclass Solution {\n    public int add(int a, int b) {\n",
             "        return a + b;\n    }\n}", "public class Main {\n    public static void main(String[] args) {\n"
             "        Solution s = new Solution();\n        List<Boolean> correct = Arrays.asList(s.add(2, 3) == 5, "
             "s.add(-1, 1) == 0);\n        if (correct.contains(false)) {\n            throw new AssertionError();\n"
             "        }\n    }\n}", {}),
    "go": ("Go/0", "\n// a + b\nfunc Add(a int, b int) int {\n", "\nfunc Add(a int, b int) int {\n",
           "    return a + b\n}\n\n", "func TestAdd(t *testing.T) {\n    assert := assert.New(t)\n"
           "    assert.Equal(5, Add(2, 3))\n    assert.Equal(0, Add(-1, 1))\n}\n",
           {"import": "", "docstring": "// a + b\n", "test_setup": "package main\n\nimport (\n    \"testing\"\n"
            "    \"github.com/stretchr/testify/assert\"\n)\n"}),
    "rust": ("Rust/0", "\n/*\n a + b\n*/\n", "\nuse std::{slice::Iter, cmp::{max, self}};\nuse rand::Rng;\n"
             "use regex::Regex;\nuse md5;\n\nfn add(a: i32, b: i32) -> i32{\n", "    return a + b;\n}\n",
             "\n#[cfg(test)]\nmod tests {\n    use super::*;\n\n#[test]\n    fn test_add() {\n"
             "        assert_eq!(add(2, 3), 5);\n        assert_eq!(add(-1, 1), 0);\n    }\n\n}\n", {}),
}
WRONG = {"python": "    return a - b\n", "javascript": "  return a - b\n}\n", "cpp": "    return a - b;\n}\n",
         "java": "        return a - b;\n    }\n}", "go": "    return a - b\n}\n\n", "rust": "    return a - b;\n}\n"}


def humaneval_x_record(lang):
    task_id, prompt, declaration, canonical, test, extra = HUMANEVAL_X[lang]
    return dict(task_id=task_id, prompt=prompt, declaration=declaration, canonical_solution=canonical, test=test,
                example_test="", **extra)


@pytest.mark.parametrize("fast", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_humaneval_x_canonical_passes_and_a_wrong_value_fails(fast):
    langs = [lang for lang in HUMANEVAL_X if (lang in ("python", "javascript")) == fast]
    problems = [benchmarks.to_problem(humaneval_x_record(lang)) for lang in langs]
    verdicts = benchmarks.judge([job for p in problems for job in ((p, p.canonical), (p, WRONG[p.language]))])
    assert [(p.language, v.status) for p, v in zip([p for p in problems for _ in "ab"], verdicts)] == \
        [(p.language, status) for p in problems for status in ("passed", "failed")], verdicts


def test_humaneval_x_rust_drops_the_crates_use_lines_and_runs_the_tests_from_main():
    problem = benchmarks.to_problem(humaneval_x_record("rust"))
    program = benchmarks.assemble(problem, problem.canonical)
    assert "use rand" not in program and "use md5" not in program and "use std::{slice" in program
    assert "tests::test_add();" in program and "#[test]" not in program


# ----------------------------------------------------------------------------- reading and cutting

def test_jsonl_gzip_and_parquet_read_alike(tmp_path):
    import pyarrow
    import pyarrow.parquet
    rows = [multipl_e_record(lang) for lang in MULTIPL_E]
    as_jsonl = benchmarks.read(write_jsonl(tmp_path / "humaneval-x.jsonl", rows))
    as_gzip = benchmarks.read(write_jsonl(tmp_path / "humaneval-x.jsonl.gz", rows, gzipped=True))
    (tmp_path / "humaneval-cpp").mkdir()  # the Hugging Face layout: humaneval-<lang>/*.parquet
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), tmp_path / "humaneval-cpp" / "test-0.parquet")
    as_parquet = benchmarks.read(str(tmp_path / "humaneval-cpp"))
    strip = lambda problems: [dataclass_without_source(p) for p in problems]
    assert strip(as_jsonl) == strip(as_gzip) == strip(as_parquet)
    assert [p.language for p in as_parquet] == list(MULTIPL_E)
    assert len(benchmarks.read(str(tmp_path))) == 3 * len(rows)  # a folder: every file in it


def dataclass_without_source(problem):
    import dataclasses
    return dataclasses.replace(problem, source="")


def test_humaneval_x_records_are_told_from_multipl_e_and_bad_records_are_clear_errors(tmp_path):
    problem = benchmarks.to_problem(humaneval_x_record("go"))
    assert (problem.benchmark, problem.language, problem.canonical) == ("humaneval-x", "go", "    return a + b\n}\n\n")
    with pytest.raises(ValueError, match="neither MultiPL-E's"):
        benchmarks.to_problem({"question": "?"})
    with pytest.raises(ValueError, match="'cobol' is not one of ours"):
        benchmarks.to_problem(dict(multipl_e_record("python"), language="cobol"))
    with pytest.raises(ValueError, match="not JSON lines"):
        (tmp_path / "bad.jsonl").write_text("{not json\n")
        benchmarks.read(str(tmp_path / "bad.jsonl"))
    with pytest.raises(FileNotFoundError):
        benchmarks.read(str(tmp_path / "missing"))


def test_a_completion_is_cut_at_the_first_stop_token_and_after_a_humaneval_x_function():
    python = benchmarks.to_problem(multipl_e_record("python"))
    assert benchmarks.cut("    return a + b\n\ndef other():\n    pass\n# x", python) == "    return a + b\n"
    assert benchmarks.cut("    return a + b\n", python) == "    return a + b\n"
    cpp = benchmarks.to_problem(humaneval_x_record("cpp"))
    assert benchmarks.cut("    return a + b;\n}\nint main() {}\n", cpp) == "    return a + b;\n}\n"
    hx_python = benchmarks.to_problem(humaneval_x_record("python"))
    assert benchmarks.cut("    return a + b\n\nprint(add(1, 2))\n", hx_python) == "    return a + b\n\n"


def test_a_chat_reply_gives_its_first_code_block_after_the_signature():
    problem = benchmarks.to_problem(multipl_e_record("python"))
    reply = ("Here it is:\n```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```\nand\n```python\nx\n```")
    assert benchmarks.code_block(reply, problem) == "    return a + b\n"
    assert benchmarks.code_block("```\n    return a + b\n```", problem) == "    return a + b\n"
    assert benchmarks.code_block("    return a + b\n", problem) == "    return a + b\n"
    java = benchmarks.to_problem(multipl_e_record("java"))  # its tests close the method: the reply's brace is cut
    reply = "```java\nclass Problem {\n    public static long add(long a, long b) {\n        return a + b;\n    }\n}\n```"
    assert benchmarks.cut(benchmarks.code_block(reply, java), java) == "        return a + b;"


def test_translation_prompt_shows_the_source_solution_and_ends_with_the_target_prompt():
    source = benchmarks.to_problem(humaneval_x_record("python"))
    target = benchmarks.to_problem(humaneval_x_record("cpp"))
    prompt = benchmarks.translation_prompt(source, target)
    assert prompt.endswith(target.prompt) and "//     return a + b" in prompt


def test_the_command_line_scores_canonical_solutions_and_stubs_fail(tmp_path, capsys):
    benchmarks.main([write_jsonl(tmp_path / "hx.jsonl", [humaneval_x_record("python"), humaneval_x_record("javascript")])])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines[1:3]] == [["javascript", "1/1", "100.0"], ["python", "1/1", "100.0"]]
    benchmarks.main([write_jsonl(tmp_path / "me.jsonl", [multipl_e_record(lang) for lang in FAST]), "--stubs"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines[1:-1]] == ["0/1"] * len(FAST), lines  # each failed, none named


def test_each_judge_of_a_process_finds_the_toolchains_warm_up():
    """The warm-up (C++'s precompiled headers) runs once per process; a second judge uses it too."""
    problem = benchmarks.to_problem(humaneval_x_record("cpp"))
    first, = benchmarks.judge([(problem, problem.canonical)])
    second, = benchmarks.judge([(problem, problem.canonical + "\n")])
    assert (first.status, second.status) == ("passed", "passed"), (first, second)
