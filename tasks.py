"""
tasks.py: the translation world. Random integer programs, rendered in ten languages, with unit
tests; the harness that turns a function into a runnable program; the prompt format (its
markers, and the end-of-text string EOT from tokenizer.py, which turns text into token ids).

A program is one function `f` of 1 to 3 int arguments, built from a tiny AST (below): locals,
+ - * / %, min/max/abs, comparisons and and/or/not in conditions, if/else, bounded for and while
loops, one return at the end. The AST is the single source of truth: `evaluate` runs it in Python
(the reference that computes every expected output) and `render` writes it in each language.

Integer semantics are made to agree across languages by construction, not by emulation:
  - every value (each operation's result) stays within int32 on every test input;
  - division and modulo only ever divide by a positive constant, and only non-negative dividends
    are allowed, where truncating (C, Java, Rust, ...) and flooring (Python, Lua) division agree:
    `//` in Python and Lua, `/` in C, C++, Java, Go, Rust and bash, `Math.trunc(a / c)` in
    JavaScript, `intdiv` in PHP.
Test inputs are drawn at random and kept only where the program stays inside those rules, so a
program's tests are its domain; a program with too few valid inputs is rejected.

    python tasks.py          # prints one random program in every language, with its tests

Used by reward.py (harness, defines_f, EOT), ir.py (generate, render, harness), prepare.py
(generate, render, make_prompt, the language lists), bench.py (generate, render, harness,
heaviest), and train.py, eval.py, stats.py and ablation.py (the language lists).
"""
import random
import re
from dataclasses import dataclass

from tokenizer import EOT  # a completion ends with end-of-text (make_prompt)

LANGS = ("python", "c", "cpp", "java", "javascript", "bash", "php", "rust", "go", "lua")
SOURCE_LANGS = ("python", "cpp")
RL_TARGETS = ("python", "cpp", "java", "javascript", "bash", "php")
HELDOUT_TARGETS = ("rust", "go", "lua")  # seen in SFT, never in RL prompts
TRANSLATE = "<|translate|>"  # the prompt markers (see make_prompt): special tokens of the project's
TO = "<|to|>"                # BPE (prepare.py), plain text to a pretrained model's tokenizer
MARKERS = (TRANSLATE, TO)

ARG_NAMES = ("a", "b", "c")
LOCAL_NAMES = ("x", "y", "z", "w")  # declared at the top level of f, assignable everywhere
LOOP_NAMES = ("i", "j", "k")        # loop counters: read-only except their own update
INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
MAX_STEPS = 5000                    # statements executed per call; more is rejected (loops stay small)
INPUT_RANGE = (-10, 20)             # test arguments are drawn from here
MIN_DISTINCT_OUTPUTS = 3            # tests that barely vary cannot tell a translation from a guess


# ----------------------------------------------------------------------------- the AST

@dataclass(frozen=True)
class Var:
    name: str

@dataclass(frozen=True)
class Const:
    value: int  # always >= 0: a negative literal reads differently in every language

@dataclass(frozen=True)
class BinOp:
    op: str  # + - * / %   (/ and %: the right operand is a positive Const)
    left: object
    right: object

@dataclass(frozen=True)
class Call:
    fn: str  # min max abs
    args: tuple

@dataclass(frozen=True)
class Compare:
    op: str  # < <= > >= == !=
    left: object
    right: object

@dataclass(frozen=True)
class BoolOp:
    op: str  # and or
    left: object
    right: object

@dataclass(frozen=True)
class Not:
    operand: object

@dataclass(frozen=True)
class Assign:
    name: str
    value: object
    declare: bool  # the first assignment of a local (int x = ..., let x = ..., local x = ...)

@dataclass(frozen=True)
class If:
    cond: object
    then: tuple
    orelse: tuple  # () for no else

@dataclass(frozen=True)
class For:
    var: str
    start: int
    stop: object  # reads only arguments and enclosing loop counters: it never changes in the loop
    body: tuple

@dataclass(frozen=True)
class While:
    cond: object
    body: tuple  # ends with the counter's update; the generator guarantees termination

@dataclass(frozen=True)
class Return:
    value: object

@dataclass(frozen=True)
class Program:
    n_args: int
    body: tuple  # statements; the last one is the Return


# ----------------------------------------------------------------------------- the reference

class OutOfDomain(Exception):
    """The program leaves the shared semantics on this input (int32 overflow, a negative
    dividend, too many steps): the input is not used as a test."""


def evaluate(program, args):
    """f(*args) computed from the AST, checking the rules of the module docstring at every step."""
    env = dict(zip(ARG_NAMES, args))
    steps = [0]

    def check(value):
        if not INT32_MIN <= value <= INT32_MAX:
            raise OutOfDomain("int32 overflow")
        return value

    def ev(e):
        if isinstance(e, Var):
            return env[e.name]
        if isinstance(e, Const):
            return e.value
        if isinstance(e, BinOp):
            left, right = ev(e.left), ev(e.right)
            if e.op in "/%" and left < 0:
                raise OutOfDomain("negative dividend")
            ops = {"+": left + right, "-": left - right, "*": left * right}
            return check(ops[e.op] if e.op in ops else left // right if e.op == "/" else left % right)
        if isinstance(e, Call):
            values = [ev(a) for a in e.args]
            return check({"min": min, "max": max, "abs": abs}[e.fn](*values))
        if isinstance(e, Compare):
            left, right = ev(e.left), ev(e.right)
            return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right,
                    "==": left == right, "!=": left != right}[e.op]
        if isinstance(e, BoolOp):  # both sides are checked, whatever short-circuiting would skip
            left, right = ev(e.left), ev(e.right)
            return (left and right) if e.op == "and" else (left or right)
        if isinstance(e, Not):
            return not ev(e.operand)
        raise TypeError(f"not an expression: {e!r}")

    def run(stmts):
        for s in stmts:
            steps[0] += 1
            if steps[0] > MAX_STEPS:
                raise OutOfDomain("too many steps")
            if isinstance(s, Assign):
                env[s.name] = ev(s.value)
            elif isinstance(s, If):
                run(s.then if ev(s.cond) else s.orelse)
            elif isinstance(s, For):
                for value in range(s.start, ev(s.stop)):
                    env[s.var] = value
                    run(s.body)
            elif isinstance(s, While):
                while ev(s.cond):
                    run(s.body)
            elif isinstance(s, Return):
                return ev(s.value)
        return None

    return run(program.body)


# ----------------------------------------------------------------------------- the generator

def _compound(s):
    """(op, right) when an assignment reads `x = x op right` with op in + - *: rendered `x += right`."""
    if isinstance(s, Assign) and isinstance(s.value, BinOp) and s.value.op in "+-*" \
            and s.value.left == Var(s.name) and not s.declare:
        return s.value.op, s.value.right
    return None


def names_read(node):
    """Names whose value is read. `x += e` does not count as reading x: a local that is only
    ever updated that way is as dead as one never read (which Go refuses to compile)."""
    if isinstance(node, (tuple, list)):
        return set().union(*map(names_read, node)) if node else set()
    if isinstance(node, Var):
        return {node.name}
    if isinstance(node, Assign):
        compound = _compound(node)
        return names_read(compound[1] if compound else node.value)
    fields = [getattr(node, f) for f in node.__dataclass_fields__] if hasattr(node, "__dataclass_fields__") else []
    return set().union(*(names_read(f) for f in fields if not isinstance(f, (str, int))))


class _Generator:
    """Builds one random program. Locals are declared at the top level only (so they are in scope
    everywhere below, in every language); nested statements update them. Loop counters are fresh
    names per scope (Java forbids shadowing) and never assigned by the body (so loops end)."""

    def __init__(self, rng, n_args, max_depth):
        self.rng, self.max_depth = rng, max_depth
        self.args = list(ARG_NAMES[:n_args])
        self.locals = []       # declared locals, assignable
        self.scopes = [[]]     # loop counters declared in each open block

    def readable(self):
        return self.args + self.locals + [name for scope in self.scopes for name in scope]

    def free_loop_name(self):
        taken = {name for scope in self.scopes for name in scope}
        return next((n for n in LOOP_NAMES if n not in taken), None)

    def const(self, low=1):
        return Const(self.rng.choice([n for n in (0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 9, 10) if n >= low]))

    def atom(self):
        return Var(self.rng.choice(self.readable())) if self.rng.random() < 0.75 else self.const()

    def expr(self, depth=2):
        """An int expression; depth bounds its nesting."""
        rng, r = self.rng, self.rng.random()
        if depth == 0 or r < 0.35:
            return self.atom()
        if r < 0.45:  # min/max/abs: the first argument is never a constant (see render, rust)
            first = Var(rng.choice(self.readable())) if rng.random() < 0.6 else self.expr(depth - 1)
            if isinstance(first, Const):
                first = Var(rng.choice(self.readable()))
            if rng.random() < 0.3:
                return Call("abs", (first,))
            second = self.atom()
            while second == first:
                second = self.atom()
            return Call(rng.choice(("min", "max")), (first, second))
        if r < 0.53:  # division and modulo by a small positive constant
            left = self.expr(depth - 1)
            if isinstance(left, Const):
                left = Var(rng.choice(self.readable()))
            return BinOp(rng.choice("/%"), left, Const(rng.choice((2, 2, 3, 5, 10))))
        left, right = self.expr(depth - 1), self.expr(depth - 1)
        if isinstance(left, Const) and isinstance(right, Const):
            left = Var(rng.choice(self.readable()))
        return BinOp(rng.choice("++--*"), left, right)

    def cond(self):
        rng = self.rng
        compare = lambda: Compare(rng.choice(("<", "<=", ">", ">=", "==", "!=")), self.expr(1),
                                  self.const(0) if rng.random() < 0.5 else self.atom())
        r = rng.random()
        if r < 0.2:
            return BoolOp(rng.choice(("and", "or")), compare(), compare())
        if r < 0.25:
            return Not(BoolOp(rng.choice(("and", "or")), compare(), compare()))
        return compare()

    def loop_stop(self):
        """A loop bound that the body cannot change: a constant, or a capped argument/counter."""
        stable = self.args + [name for scope in self.scopes for name in scope]
        r = self.rng.random()
        if r < 0.4:
            return Const(self.rng.randint(2, 6))
        if r < 0.8:
            return Call("min", (Var(self.rng.choice(stable)), Const(self.rng.randint(3, 8))))
        return Var(self.rng.choice(stable))

    def assign(self, top):
        rng = self.rng
        if top and (not self.locals or (len(self.locals) < len(LOCAL_NAMES) and rng.random() < 0.5)):
            name = LOCAL_NAMES[len(self.locals)]
            value = self.expr()
            self.locals.append(name)  # after the expression: x is not read in its own declaration
            return Assign(name, value, declare=True)
        name = rng.choice(self.locals)
        if rng.random() < 0.6:  # an update x op= e, the common shape inside loops
            return Assign(name, BinOp(rng.choice("++-*"), Var(name), self.expr(1)), declare=False)
        value = self.expr()
        if name not in names_read(value):  # else the old value is dead: x = 1; x = a
            value = BinOp(rng.choice("+-*"), value, Var(name))
        return Assign(name, value, declare=False)

    def block(self, budget, depth):
        """A list of statements using `budget` statements in all (nested ones included)."""
        self.scopes.append([])
        stmts = self.statements(budget, depth, top=False)
        self.scopes.pop()
        return tuple(stmts)

    def statements(self, budget, depth, top):
        rng, out = self.rng, []
        while budget > 0:
            can_nest = depth < self.max_depth and budget >= 2 and self.locals
            kind = rng.choice(("assign", "assign", "if", "for", "while")) if can_nest else "assign"
            loop_name = self.free_loop_name()
            if kind in ("for", "while") and loop_name is None:
                kind = "if"
            if kind == "assign":
                out.append(self.assign(top))
                budget -= 1
                continue
            inner = rng.randint(1, min(3, budget - 1))
            budget -= 1 + inner
            if kind == "if":
                cond = self.cond()
                n_else = rng.randint(1, inner - 1) if inner >= 2 and rng.random() < 0.5 else 0
                out.append(If(cond, self.block(inner - n_else, depth + 1),
                              self.block(n_else, depth + 1) if n_else else ()))
            elif kind == "for":
                start, stop = rng.choice((0, 0, 1)), self.loop_stop()
                self.scopes.append([loop_name])
                body = self.statements(inner, depth + 1, top=False)
                self.scopes.pop()
                out.append(For(loop_name, start, stop, tuple(body)))
            else:
                out += self.while_loop(loop_name, inner, depth)
        return out

    def while_loop(self, name, inner, depth):
        """Two shapes: a counter `k = 0; while k < n: ...; k += 1`, or digit/halving
        `k = x; while k > 0: ...; k = k // d`; either way k is only changed by its update."""
        rng = self.rng
        if rng.random() < 0.7:
            init = Assign(name, Const(0), declare=True)
            cond = Compare("<", Var(name), self.loop_stop())
            if rng.random() < 0.3:
                cond = BoolOp("and", cond, Compare(rng.choice(("<", ">")), Var(rng.choice(self.locals)), self.const()))
            update = Assign(name, BinOp("+", Var(name), Const(1)), declare=False)
        else:
            init = Assign(name, Var(rng.choice(self.readable())), declare=True)
            cond = Compare(">", Var(name), Const(0))
            update = Assign(name, BinOp("/", Var(name), Const(rng.choice((2, 10)))), declare=False)
        self.scopes[-1].append(name)  # declared in the enclosing block, visible in the loop and after
        body = self.block(inner, depth + 1)
        return [init, While(cond, body + (update,))]

    def program(self, n_statements):
        body = self.statements(n_statements, 0, top=True)
        # Every local must be read (Go refuses unused locals), and the last one assigned at the top
        # level should matter: the return combines those (or, when they are one, may add to it).
        last = next(s.name for s in reversed(body) if isinstance(s, Assign) and s.name in self.locals)
        wanted = [n for n in self.locals if n not in names_read(body) or n == last]
        value = Var(wanted[0])
        for name in wanted[1:]:
            value = BinOp(self.rng.choice("+-*"), value, Var(name))
        if len(wanted) == 1 and self.rng.random() < 0.3:
            value = BinOp(self.rng.choice("+-*"), value, self.atom())
        return Program(len(self.args), tuple(body) + (Return(value),))


def make_tests(program, rng, n_tests=7):
    """[stdin_line, expected_stdout_line] pairs on random inputs inside the program's domain,
    or None when there are too few such inputs or the outputs barely depend on the program."""
    tests, seen = [], set()
    for _ in range(20 * n_tests):
        args = tuple(rng.randint(*INPUT_RANGE) for _ in range(program.n_args))
        if args in seen:
            continue
        seen.add(args)
        try:
            tests.append([" ".join(map(str, args)), str(evaluate(program, args))])
        except OutOfDomain:
            continue
        if len(tests) == n_tests:
            break
    if len(tests) < n_tests or len({out for _, out in tests}) < MIN_DISTINCT_OUTPUTS:
        return None
    if any(all(line.split()[i] == out for line, out in tests) for i in range(program.n_args)):
        return None  # f returns one of its arguments unchanged: the rest is dead code
    return tests


def generate(seed, min_statements=3, max_statements=7, max_depth=2, n_tests=7):
    """(program, tests) for a seed (any int or str); the same seed always gives the same program.
    Difficulty knobs: the statement count (nested ones included) and the nesting depth."""
    rng = random.Random(f"tasks:{seed}")
    while True:  # rejection sampling: a few draws per accepted program
        n_args = rng.choice((1, 2, 2, 3))
        program = _Generator(rng, n_args, max_depth).program(rng.randint(min_statements, max_statements))
        tests = make_tests(program, rng, n_tests)
        if tests is not None:
            return program, tests


def heaviest():
    """(program, tests): the costliest program to run that the rules allow, what the reward's run
    budget (reward.RUN_TIMEOUT) is sized by. Every call executes MAX_STEPS statements, a loop
    whose every iteration computes with each kind of operation, on the seven tests of a task,
    spread over INPUT_RANGE; one iteration more is out of the domain."""
    a, i, x = Var("a"), Var("i"), Var("x")
    step = BinOp("+", BinOp("%", BinOp("+", x, BinOp("*", i, Call("abs", (a,)))), Const(1000)), Call("max", (i, a)))
    # MAX_STEPS = the assignment before the loop, the loop, its iterations and the return
    loop = For("i", 0, Const(MAX_STEPS - 3), (Assign("x", step, False),))
    program = Program(1, (Assign("x", Const(0), True), loop, Return(x)))
    return program, [(str(arg), str(evaluate(program, (arg,)))) for arg in (-10, -3, 0, 4, 9, 15, 20)]


# ----------------------------------------------------------------------------- rendering

ATOM = 9  # precedence of names, constants, calls and parenthesised text
_PREC = {"or": 1, "and": 2, "not": 3, "cmp": 4, "+": 5, "-": 5, "*": 6, "/": 6, "%": 6}
_FUNCTIONS = {"python": "{}", "cpp": "std::{}", "java": "Math.{}", "javascript": "Math.{}",
              "php": "{}", "go": "{}", "lua": "math.{}"}  # min/max/abs; c, bash and rust: see _call
_SEMICOLON = ("c", "cpp", "java", "javascript", "php", "rust")
_PAREN_CONDITION = ("c", "cpp", "java", "javascript", "php")  # if (...) {


def _text(e, lang):
    return _expr(e, lang)[0]


def _wrap(e, lang, min_prec):
    """e's text, in parentheses when it binds less tightly than its place needs."""
    text, prec = _expr(e, lang)
    return text if prec >= min_prec else f"({text})"


def _expr(e, lang):
    """(text, precedence) of an expression in lang. Bash gets the text inside $(( )) / (( ))."""
    if isinstance(e, Var):
        return ("$" + e.name if lang == "php" else e.name), ATOM
    if isinstance(e, Const):
        return str(e.value), ATOM
    if isinstance(e, BinOp):
        if e.op == "/" and lang == "javascript":
            return f"Math.trunc({_wrap(e.left, lang, 6)} / {_wrap(e.right, lang, 7)})", ATOM
        if e.op == "/" and lang == "php":
            return f"intdiv({_text(e.left, lang)}, {_text(e.right, lang)})", ATOM
        op = "//" if e.op == "/" and lang in ("python", "lua") else e.op
        prec = _PREC[e.op]  # left-associative: an equal-precedence right operand needs parentheses
        return f"{_wrap(e.left, lang, prec)} {op} {_wrap(e.right, lang, prec + 1)}", prec
    if isinstance(e, Call):
        return _call(e, lang), ATOM
    if isinstance(e, Compare):
        op = "~=" if e.op == "!=" and lang == "lua" else e.op
        return f"{_wrap(e.left, lang, 5)} {op} {_wrap(e.right, lang, 5)}", _PREC["cmp"]
    if isinstance(e, BoolOp):
        word = e.op if lang in ("python", "lua") else {"and": "&&", "or": "||"}[e.op]
        # `and` inside `or` gets parentheses too: nobody should need the precedence table to read it
        sides = [f"({_text(side, lang)})" if isinstance(side, BoolOp) and side.op != e.op
                 else _wrap(side, lang, _PREC[e.op]) for side in (e.left, e.right)]
        return f" {word} ".join(sides), _PREC[e.op]
    if isinstance(e, Not):
        if lang == "python":
            return f"not ({_text(e.operand, lang)})", _PREC["not"]
        return f"{'not ' if lang == 'lua' else '!'}({_text(e.operand, lang)})", ATOM
    raise TypeError(f"not an expression: {e!r}")


def _call(e, lang):
    args = [_text(a, lang) for a in e.args]
    if lang in ("c", "bash"):  # C has min/max/abs only via macros or stdlib.h, bash arithmetic none
        x = _wrap(e.args[0], lang, 5)
        if e.fn == "abs":
            minus_x = f"-{x}" if isinstance(e.args[0], (Var, Const)) else f"-({args[0]})"
            return f"({x} < 0 ? {minus_x} : {x})"
        y = _wrap(e.args[1], lang, 5)
        return f"({x} {'<' if e.fn == 'min' else '>'} {y} ? {x} : {y})"
    if lang == "rust":
        # i32::abs, not x.abs(): abs is an inherent method, and on a counter of `for i in 0..5`
        # rustc cannot tell which integer type owns it (E0689); min and max are Ord's, no problem
        if e.fn == "abs":
            return f"i32::abs({args[0]})"
        return f"{_wrap(e.args[0], lang, ATOM)}.{e.fn}({args[1]})"
    return f"{_FUNCTIONS[lang].format(e.fn)}({', '.join(args)})"


def _walk(stmts):
    for s in stmts:
        yield s
        for child in (getattr(s, "then", ()), getattr(s, "orelse", ()), getattr(s, "body", ())):
            yield from _walk(child)


def _bash_word(e):
    """A value in bash: a plain number or $name, else an arithmetic expansion."""
    if isinstance(e, Const):
        return str(e.value)
    return f"${e.name}" if isinstance(e, Var) else f"$(( {_text(e, 'bash')} ))"


def _assign(s, lang, reassigned):
    if lang == "bash":
        return f"{'local ' if s.declare else ''}{s.name}={_bash_word(s.value)}"
    if lang == "lua":
        return f"{'local ' if s.declare else ''}{s.name} = {_text(s.value, lang)}"
    target = "$" + s.name if lang == "php" else s.name
    end = ";" if lang in _SEMICOLON else ""
    compound = _compound(s)
    if compound:
        return f"{target} {compound[0]}= {_text(compound[1], lang)}{end}"
    if s.declare and lang == "go":
        return f"{target} := {_text(s.value, lang)}"
    if s.declare:
        mutable = s.name in reassigned
        target = {"c": "int ", "cpp": "int ", "java": "int ", "javascript": "let " if mutable else "const ",
                  "rust": "let mut " if mutable else "let "}.get(lang, "") + target
    return f"{target} = {_text(s.value, lang)}{end}"


def _open(lang, keyword, cond):
    """The first line of an if/while block."""
    if lang == "python":
        return f"{keyword} {cond}:"
    if lang == "lua":
        return f"{keyword} {cond} {'then' if keyword == 'if' else 'do'}"
    if lang == "bash":
        return f"{keyword} (( {cond} )); {'then' if keyword == 'if' else 'do'}"
    if lang == "go" and keyword == "while":
        return f"for {cond} {{"
    return f"{keyword} ({cond}) {{" if lang in _PAREN_CONDITION else f"{keyword} {cond} {{"


def _close(lang, keyword):
    return {"python": None, "lua": "end", "bash": "fi" if keyword == "if" else "done"}.get(lang, "}")


def _for_header(s, lang):
    v, start, stop = s.var, s.start, _text(s.stop, lang)
    if lang in ("python", "rust") and v not in names_read(s.body):
        v = "_"  # the idiom for an unused counter (rustc warns otherwise)
    if lang == "python":
        return f"for {v} in range({stop}):" if start == 0 else f"for {v} in range({start}, {stop}):"
    if lang == "rust":
        return f"for {v} in {start}..{stop} {{"
    if lang == "lua":  # an inclusive upper bound
        last = str(s.stop.value - 1) if isinstance(s.stop, Const) else f"{_wrap(s.stop, lang, 5)} - 1"
        return f"for {v} = {start}, {last} do"
    if lang == "bash":
        return f"for (( {v} = {start}; {v} < {stop}; {v}++ )); do"
    if lang == "go":
        return f"for {v} := {start}; {v} < {stop}; {v}++ {{"
    counter = "$" + v if lang == "php" else v
    init = {"c": "int ", "cpp": "int ", "java": "int ", "javascript": "let ", "php": ""}[lang]
    return f"for ({init}{counter} = {start}; {counter} < {stop}; {counter}++) {{"


def _block(stmts, lang, level, out, reassigned):
    pad = ("\t" if lang == "go" else "    ") * level
    for s in stmts:
        if isinstance(s, Assign):
            out.append(pad + _assign(s, lang, reassigned))
        elif isinstance(s, If):
            out.append(pad + _open(lang, "if", _text(s.cond, lang)))
            _block(s.then, lang, level + 1, out, reassigned)
            if s.orelse:
                out.append(pad + {"python": "else:", "lua": "else", "bash": "else"}.get(lang, "} else {"))
                _block(s.orelse, lang, level + 1, out, reassigned)
        elif isinstance(s, For):
            out.append(pad + _for_header(s, lang))
            _block(s.body, lang, level + 1, out, reassigned)
        elif isinstance(s, While):
            out.append(pad + _open(lang, "while", _text(s.cond, lang)))
            _block(s.body, lang, level + 1, out, reassigned)
        elif lang == "rust":  # the Return: in Rust the tail expression is the value
            out.append(pad + _text(s.value, lang))
        elif lang == "bash":
            out.append(pad + f"echo {_bash_word(s.value)}")
        else:
            out.append(pad + f"return {_text(s.value, lang)}{';' if lang in _SEMICOLON else ''}")
        close = _close(lang, "if" if isinstance(s, If) else "loop")
        if isinstance(s, (If, For, While)) and close:
            out.append(pad + close)


def render(program, lang):
    """The function f in lang, written the way a programmer of that language would write it."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}: choose one of {', '.join(LANGS)}")
    args = ARG_NAMES[:program.n_args]
    php_args = ", ".join("$" + a for a in args)
    header = {
        "python": f"def f({', '.join(args)}):",
        "c": f"int f({', '.join('int ' + a for a in args)}) {{",
        "cpp": f"int f({', '.join('int ' + a for a in args)}) {{",
        "java": f"public static int f({', '.join('int ' + a for a in args)}) {{",
        "javascript": f"function f({', '.join(args)}) {{",
        "bash": "f() {",
        "php": f"function f({php_args}) {{",
        "rust": f"fn f({', '.join(a + ': i32' for a in args)}) -> i32 {{",
        "go": f"func f({', '.join(args)} int) int {{",
        "lua": f"function f({', '.join(args)})",
    }[lang]
    lines = [header]
    if lang == "bash":
        lines.append("    local " + " ".join(f"{a}=${i + 1}" for i, a in enumerate(args)))
    reassigned = {s.name for s in _walk(program.body) if isinstance(s, Assign) and not s.declare}
    _block(program.body, lang, 1, lines, reassigned)
    if lang != "python":
        lines.append("end" if lang == "lua" else "}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- harnesses

# Each harness reads one test case per stdin line (space-separated ints) until EOF and prints
# f(...) per line, like MultiPL-E's. Where a language lacks min/max/abs (Go 1.19) the harness
# carries them, so that the function text itself stays idiomatic.
_GO_PRELUDE = """\
// Go before 1.21 has no built-in min and max (later versions let these shadow them).
func min(a, b int) int {
\tif a < b {
\t\treturn a
\t}
\treturn b
}

func max(a, b int) int {
\tif a > b {
\t\treturn a
\t}
\treturn b
}

func abs(a int) int {
\tif a < 0 {
\t\treturn -a
\t}
\treturn a
}"""


def harness(code, lang, n_args):
    """A complete program: `code` (the function f; for C also just a prototype such as
    `int f(int a, int b);`, with f linked from elsewhere) + a main running f on stdin's lines."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}: choose one of {', '.join(LANGS)}")
    if n_args not in (1, 2, 3):
        raise ValueError(f"n_args must be 1, 2 or 3, not {n_args!r}")
    v = [f"v[{i}]" for i in range(n_args)]
    if lang == "python":
        return f"import sys\n\n{code}\n\n\nfor line in sys.stdin:\n    if line.strip():\n" \
               f"        print(f(*map(int, line.split())))\n"
    if lang == "c":
        return (f"#include <stdio.h>\n\n{code}\n\nint main(void) {{\n    int v[3];\n"
                f"    while (scanf(\"{' '.join(['%d'] * n_args)}\", {', '.join('&' + x for x in v)}) == {n_args})\n"
                f"        printf(\"%d\\n\", f({', '.join(v)}));\n    return 0;\n}}\n")
    if lang == "cpp":
        return (f"#include <algorithm>\n#include <cstdlib>\n#include <iostream>\nusing namespace std;\n\n{code}\n\n"
                f"int main() {{\n    int v[3];\n    while (cin >> {' >> '.join(v)})\n"
                f"        cout << f({', '.join(v)}) << \"\\n\";\n    return 0;\n}}\n")
    if lang == "java":
        parsed = ", ".join(f"Integer.parseInt(w[{i}])" for i in range(n_args))
        return (f"import java.io.*;\nimport java.util.*;\n\npublic class Main {{\n{code}\n\n"
                f"    public static void main(String[] args) throws IOException {{\n"
                f"        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));\n"
                f"        String line;\n        while ((line = in.readLine()) != null) {{\n"
                f"            if (line.isBlank()) continue;\n"
                f"            String[] w = line.trim().split(\"\\\\s+\");\n"
                f"            System.out.println(f({parsed}));\n        }}\n    }}\n}}\n")
    if lang == "javascript":  # String(): a JavaScript -0 (from 0 * -3) must print as 0
        return (f"{code}\n\nfor (const line of require(\"fs\").readFileSync(0, \"utf8\").split(\"\\n\")) {{\n"
                f"    if (line.trim() === \"\") continue;\n"
                f"    console.log(String(f(...line.trim().split(/\\s+/).map(Number))));\n}}\n")
    if lang == "bash":
        return (f"{code}\n\nwhile read -r line || [ -n \"$line\" ]; do\n"
                f"    [ -z \"$line\" ] && continue\n    f $line\ndone\n")
    if lang == "php":
        return (f"<?php\n{code}\n\nwhile (($line = fgets(STDIN)) !== false) {{\n"
                f"    if (trim($line) === \"\") continue;\n"
                f"    echo f(...array_map(\"intval\", preg_split('/\\s+/', trim($line)))), \"\\n\";\n}}\n")
    if lang == "rust":
        return (f"use std::io::{{self, BufRead}};\n\n{code}\n\nfn main() {{\n"
                f"    for line in io::stdin().lock().lines() {{\n"
                f"        let v: Vec<i32> = line.unwrap().split_whitespace().map(|w| w.parse().unwrap()).collect();\n"
                f"        if v.is_empty() {{\n            continue;\n        }}\n"
                f"        println!(\"{{}}\", f({', '.join(v)}));\n    }}\n}}\n")
    if lang == "go":
        return (f"package main\n\nimport (\n\t\"bufio\"\n\t\"fmt\"\n\t\"os\"\n\t\"strconv\"\n\t\"strings\"\n)\n\n"
                f"{_GO_PRELUDE}\n\n{code}\n\nfunc main() {{\n\tscanner := bufio.NewScanner(os.Stdin)\n"
                f"\tfor scanner.Scan() {{\n\t\tfields := strings.Fields(scanner.Text())\n"
                f"\t\tif len(fields) == 0 {{\n\t\t\tcontinue\n\t\t}}\n\t\tv := make([]int, len(fields))\n"
                f"\t\tfor i, w := range fields {{\n\t\t\tv[i], _ = strconv.Atoi(w)\n\t\t}}\n"
                f"\t\tfmt.Println(f({', '.join(v)}))\n\t}}\n}}\n")
    return (f"{code}\n\nfor line in io.lines() do\n    local v = {{}}\n"
            f"    for w in line:gmatch(\"%S+\") do\n        v[#v + 1] = tonumber(w)\n    end\n"
            f"    if #v > 0 then\n        print(f(table.unpack(v)))\n    end\nend\n")


# A completion is well formed (eq. 4's first condition) when it defines f in its language.
_DEFINES_F = {
    "python": r"^def\s+f\s*\(",
    "c": r"\bint\s+f\s*\([^)]*\)\s*\{",
    "cpp": r"\bint\s+f\s*\([^)]*\)\s*\{",
    "java": r"\bint\s+f\s*\([^)]*\)\s*\{",
    "javascript": r"\bfunction\s+f\s*\(|\b(?:const|let|var)\s+f\s*=",
    "bash": r"^\s*(?:function\s+f\b|f\s*\(\s*\)\s*\{)",
    "php": r"\bfunction\s+f\s*\(",
    "rust": r"\bfn\s+f\s*\(",
    "go": r"\bfunc\s+f\s*\(",
    "lua": r"\bfunction\s+f\s*\(",
    "llvm": r"^define\b[^\n]*@f\(",
}


def defines_f(code, lang):
    """Format check: does the text define a function f in lang ("llvm" for IR)?"""
    if lang not in _DEFINES_F:
        raise ValueError(f"unknown language {lang!r}: choose one of {', '.join(_DEFINES_F)}")
    return re.search(_DEFINES_F[lang], code, re.MULTILINE) is not None


# ----------------------------------------------------------------------------- prompts

def make_prompt(src_lang, source, tgt_lang):
    """The text the model is conditioned on; the completion (the function in tgt_lang, then EOT)
    follows it directly. IR prompts are make_prompt("c", c_source, "llvm")."""
    if src_lang not in LANGS or tgt_lang not in LANGS + ("llvm",):
        raise ValueError(f"unknown language pair {src_lang!r} -> {tgt_lang!r}: sources are "
                         f"{', '.join(LANGS)}; targets also 'llvm'")
    return f"{TRANSLATE}{src_lang}\n{source}\n{TO}{tgt_lang}\n"


if __name__ == "__main__":
    program, tests = generate(0)
    for lang in LANGS:
        print(f"--- {lang}\n{render(program, lang)}")
    print("--- tests (stdin -> stdout)")
    for stdin_line, expected in tests:
        print(f"{stdin_line} -> {expected}")
