"""Tests of languages.py: the table's check and run, without reward.py's caches."""
import os
import tempfile

import pytest

import languages


@pytest.mark.parametrize("lang", ["python", "cpp"])
def test_check_gives_each_program_its_own_message_and_run_runs_what_it_left(lang):
    good = {"python": 'print("ok")\n', "cpp": '#include <cstdio>\nint main() { std::puts("ok"); }\n'}[lang]
    broken = {"python": "print(\n", "cpp": "int main() { return undeclared; }\n"}[lang]
    assert languages.missing_tools(lang) == []
    with tempfile.TemporaryDirectory() as root:
        cache_dir, staging = os.path.join(root, "cache"), os.path.join(root, "staging")
        os.makedirs(cache_dir)
        os.makedirs(staging)
        sources = [good, broken] if languages.LANGUAGES[lang].batched else [broken]
        errors, result = languages.check(lang, sources, staging, cache_dir)
        assert result.status != "infra_error" and errors[-1], (errors, result)
        if len(sources) == 1:  # a language checked one program at a time: the good one alone
            staging = os.path.join(root, "alone")
            os.makedirs(staging)
            errors, _ = languages.check(lang, [good], staging, cache_dir)
        assert errors[0] == "", errors
        ran = languages.run(lang, os.path.join(staging, "0", "prog"), timeout=5.0)
        assert (ran.status, ran.stdout) == ("ok", b"ok\n"), ran


def test_an_unknown_language_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown language 'cobol'"):
        languages.missing_tools("cobol")
