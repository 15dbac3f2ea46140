"""
C -> LLVM IR groups for GEPO (paper eqs. 6-9): equivalent IRs (winners) and inequivalent ones (losers).

For a C function `f` we ask clang for its LLVM IR at -O0 -O1 -O2 -O3 -Os -Oz. Each level gives a
different text of the same program: after noise is stripped and duplicates merged, these are the
winners Y_w of a group. The losers Y_l are small mutations of the winners (add <-> sub, a flipped
or off-by-one comparison, a constant +-1, swapped operands, swapped select arms or branch targets,
min <-> max): the slips a translator makes. Nothing is taken on faith: every IR is linked with the
C harness of tasks.py and run on the program's tests. A winner must pass them all (else something
is broken and we raise); a loser must compile and fail at least one test, so it is provably
inequivalent on the tests.

    python ir.py          # prints one group for a generated C function
    python ir.py 500      # groups for 500 generated programs: time, group sizes, IR lengths

Used by prepare.py: make_groups (a batch of programs at a time, in a process pool) or make_group.
Speed: a clang process costs ~50 ms to start, far more than compiling one small function. So a
batch of programs is compiled as ONE C file per level (6 clang runs per batch), and all IRs of a
batch are linked into ONE test binary per arity, which is then run once per IR.
"""
import collections
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import tasks

LEVELS = ("O0", "O1", "O2", "O3", "Os", "Oz")
# Why these flags: the IR is read and written by a small model, so it should be short and regular.
# No unrolling or vectorisation (they copy the loop body and bring vector types), no debug info.
# Value names are discarded (clang's default): %0, %1, ... are shorter than %for.body.i, and two
# levels that differ only in naming collapse to one text. At -O0 we keep clang's literal output
# (an alloca per variable, a load and a store per use): the most direct image of the C source, an
# easy winner to learn from. -Xclang -disable-O0-optnone would matter only if we ran more passes
# over the -O0 IR; we do not, and the optnone attribute is stripped with the others anyway.
CLANG_FLAGS = ["-S", "-emit-llvm", "-g0", "-w", "-fno-unroll-loops", "-fno-vectorize", "-fno-slp-vectorize"]
# A longer winner (mostly the -O0 IR of a long f) is left out. IR costs ~2.5 characters a token with
# prepare.py's small BPE, so 1100 characters keep prompt + IR within a 512-token block for ~96% of groups.
MAX_IR_CHARS = 1100
MAX_LOSERS = 4              # losers kept per group
CANDIDATES_PER_LOSER = 3    # mutations tried per wanted loser (some are equivalent on the tests)
WINNER_CPU_SECONDS = 10.0   # a winner needs about a millisecond; one that needs this is a bug
LOSER_CPU_SECONDS = 0.25    # a mutation can loop (nearly) forever, e.g. an induction step 1 -> 2
VARIANT_ENV = "IR_VARIANT"  # which IR of a test binary f runs (see _variant_module)
CPU_LIMIT_ENV = "IR_CPU_MS"  # and its budget of CPU time (see _VARIANT_SELECTOR)


def require_clang():
    if shutil.which("clang") is None:
        raise RuntimeError("clang not found: ir.py needs it to emit and build LLVM IR. "
                           "Install the Debian/Ubuntu package `clang` (apt-get install clang).")


# ----------------------------------------------------------------------------- C -> clean IR

def _defined_functions(c_source):
    return re.findall(r"^[ \t]*(?:static\s+)?(?:inline\s+)?int\s+(\w+)\s*\([^;{]*\)\s*\{", c_source, re.M)


def _batch_source(c_sources):
    """One C file with every program, each function renamed by the preprocessor (f -> f__p3), so
    that one clang run compiles them all; #includes are hoisted so that no rename touches a header."""
    includes, parts = [], []
    for k, source in enumerate(c_sources):
        body = []
        for line in source.split("\n"):
            (includes if line.lstrip().startswith("#include") else body).append(line)
        names = _defined_functions(source)
        parts += [f"#define {name} {name}__p{k}" for name in names] + body + [f"#undef {name}" for name in names]
    return "\n".join(list(dict.fromkeys(includes)) + parts) + "\n"


def _clang_to_ir(c_file, workdir, levels):
    """Raw IR modules {level: text} of one C file; the levels run concurrently."""
    procs = {level: subprocess.Popen(["clang", f"-{level}", *CLANG_FLAGS, c_file, "-o", f"{level}.ll"],
                                     cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for level in levels}
    raw, errors = {}, {}
    for level, proc in procs.items():
        _, err = proc.communicate()
        if proc.returncode != 0:
            errors[level] = err
            continue
        with open(os.path.join(workdir, f"{level}.ll")) as fh:
            raw[level] = fh.read()
    return raw, errors


# Noise that does not change what f computes: dropping any of it leaves valid IR with the same
# meaning (attributes and metadata only ever add assumptions or hints).
_NOISE = [
    (re.compile(r"\s*;.*$"), ""),                          # comments and "; preds = ..." notes
    (re.compile(r", ![\w.]+ !\d+"), ""),                   # !llvm.loop, !tbaa, ... attachments
    (re.compile(r", align \d+"), ""),                      # i32 is 4-aligned by default
    (re.compile(r" #\d+"), ""),                            # attribute group references
    (re.compile(r"\b(dso_local|local_unnamed_addr|unnamed_addr|noundef|immarg) ?"), ""),
    (re.compile(r"\btail call\b"), "call"),                # a code generation hint
    (re.compile(r" +(?=[,)])"), ""),                       # spaces left in front of , or )
]
_DEFINE = re.compile(r"^define .*?@([\w.$]+)\(")
_DECLARE = re.compile(r"^declare .*?@([\w.$]+)\(")


def _split_module(raw):
    """The definitions {name: text} and declarations {name: line} of a module, without noise."""
    functions, declarations, body = {}, {}, None
    for line in raw.split("\n"):
        for pattern, replacement in _NOISE:
            line = pattern.sub(replacement, line)
        line = line.rstrip()
        if line.startswith("define "):
            body = [line]
        elif body is not None:
            body.append(line)
            if line == "}":
                functions[_DEFINE.match(body[0]).group(1)] = "\n".join(body)
                body = None
        elif line.startswith("declare "):
            declarations[_DECLARE.match(line).group(1)] = line
    return functions, declarations


def _assemble(functions, declarations):
    """IR text: the definitions (f first), then the declarations they use."""
    text = "\n\n".join(functions)
    used = [line for name, line in declarations.items() if f"@{name}(" in text]
    return text + ("\n\n" + "\n".join(used) if used else "")


def compile_to_ir(c_sources, levels=LEVELS):
    """For each C source, its clean IR per level: [{level: ir_text}]. One clang run per level."""
    require_clang()
    with tempfile.TemporaryDirectory(prefix="ir_") as tmp:
        with open(os.path.join(tmp, "batch.c"), "w") as fh:
            fh.write(_batch_source(c_sources))
        raw, errors = _clang_to_ir("batch.c", tmp, levels)
    if errors:  # name the program at fault, not a line of the batch file
        for source in c_sources:
            with tempfile.TemporaryDirectory(prefix="ir_") as tmp:
                with open(os.path.join(tmp, "f.c"), "w") as fh:
                    fh.write(source)
                _, single_errors = _clang_to_ir("f.c", tmp, list(errors)[:1])
            if single_errors:
                raise RuntimeError(f"clang cannot compile this C function:\n{source}\n"
                                   f"{next(iter(single_errors.values()))}")
        raise RuntimeError(f"clang failed on a batch of C functions:\n{next(iter(errors.values()))}")
    out = [{} for _ in c_sources]
    for level, module in raw.items():
        functions, declarations = _split_module(module)
        for k in range(len(c_sources)):
            suffix = f"__p{k}"
            mine = [text for name, text in functions.items() if name.endswith(suffix)]
            mine.sort(key=lambda text: _DEFINE.match(text).group(1) != f"f{suffix}")  # f first
            text = re.sub(rf"(@[\w.$]+?){suffix}(?![\w.$])", r"\1", _assemble(mine, declarations))
            out[k][level] = text
    return out


def dedupe_levels(ir_by_level, max_chars=MAX_IR_CHARS):
    """The distinct IRs no longer than max_chars and, for each, the levels that produced it."""
    texts, levels = [], []
    for level, ir in ir_by_level.items():
        if len(ir) > max_chars:
            continue
        if ir in texts:
            levels[texts.index(ir)].append(level)
        else:
            texts.append(ir)
            levels.append([level])
    return texts, levels


# ----------------------------------------------------------------------------- mutations (losers)

_BINOP = re.compile(r"^(\s*%[\w.]+ = )(add|sub|mul|sdiv|udiv|srem|urem|shl|lshr|ashr|and|or|xor)"
                    r"((?: nuw| nsw| exact)*) (i\d+) ([^,]+), (.+)$")
_ICMP = re.compile(r"^(\s*%[\w.]+ = )icmp (\w+) (i\d+) ([^,]+), (.+)$")
_SELECT = re.compile(r"^(\s*%[\w.]+ = select i1 [^,]+), (i\d+ [^,]+), (i\d+ .+)$")
_BR = re.compile(r"^(\s*br i1 [^,]+), (label %[\w.]+), (label %[\w.]+)$")
_MINMAX = re.compile(r"@llvm\.([su])(min|max)\.")
# integer constants: typed ones ("i32 7"), phi values ("[ 0, %3 ]"), the right operand ("%5, 1")
_CONSTANT = re.compile(r"(?<=i32 )-?\d+\b|(?<=\[ )-?\d+(?=, )|(?<=, )-?\d+$")

OPCODE_SWAPS = {"add": "sub", "sub": "add", "mul": "add", "sdiv": "srem", "srem": "sdiv",
                "udiv": "urem", "urem": "udiv", "and": "or", "or": "and", "xor": "and",
                "ashr": "lshr", "lshr": "ashr", "shl": "lshr"}
LEGAL_FLAGS = {"add": {"nuw", "nsw"}, "sub": {"nuw", "nsw"}, "mul": {"nuw", "nsw"}, "shl": {"nuw", "nsw"},
               "sdiv": {"exact"}, "udiv": {"exact"}, "lshr": {"exact"}, "ashr": {"exact"}}
PREDICATE_FLIPS = {  # the negation, and the off-by-one (strict <-> non-strict) comparison
    "eq": ["ne"], "ne": ["eq"],
    "slt": ["sge", "sle"], "sge": ["slt", "sgt"], "sgt": ["sle", "sge"], "sle": ["sgt", "slt"],
    "ult": ["uge", "ule"], "uge": ["ult", "ugt"], "ugt": ["ule", "uge"], "ule": ["ugt", "ult"]}
NON_COMMUTATIVE = {"sub", "sdiv", "udiv", "srem", "urem", "shl", "lshr", "ashr"}
INT32_MIN, INT32_MAX = -2**31, 2**31 - 1


def _line_mutations(line):
    """Every mutation of one instruction line, as (kind, new line). Each one is valid IR and keeps
    the look of compiler output (constants stay on the right, flags stay legal), so that a loser
    cannot be told from a winner by its surface, only by what it computes."""
    out = []
    binop = _BINOP.match(line)
    if binop:
        head, op, flags, ty, a, b = binop.groups()
        new_op = OPCODE_SWAPS[op]
        kept = "".join(f" {flag}" for flag in flags.split() if flag in LEGAL_FLAGS.get(new_op, ()))
        out.append(("opcode", f"{head}{new_op}{kept} {ty} {a}, {b}"))
        if op in NON_COMMUTATIVE and a.startswith("%") and b.startswith("%") and a != b:
            out.append(("swap", f"{head}{op}{flags} {ty} {b}, {a}"))
    elif m := _ICMP.match(line):
        head, predicate, ty, a, b = m.groups()
        out += [("predicate", f"{head}icmp {new} {ty} {a}, {b}") for new in PREDICATE_FLIPS[predicate]]
        if predicate not in ("eq", "ne") and a.startswith("%") and b.startswith("%") and a != b:
            out.append(("swap", f"{head}icmp {predicate} {ty} {b}, {a}"))
    elif (m := _SELECT.match(line)) and m.group(2) != m.group(3):
        out.append(("select", f"{m.group(1)}, {m.group(3)}, {m.group(2)}"))
    elif (m := _BR.match(line)) and m.group(2) != m.group(3):
        out.append(("branch", f"{m.group(1)}, {m.group(3)}, {m.group(2)}"))
    if m := _MINMAX.search(line):
        other = "max" if m.group(2) == "min" else "min"
        out.append(("minmax", line.replace(m.group(0), f"@llvm.{m.group(1)}{other}.")))
    if line.lstrip().startswith("switch"):
        return out  # a case value +-1 may duplicate another case: invalid IR
    for c in _CONSTANT.finditer(line):
        is_right_operand = binop is not None and c.start() == binop.start(6)
        for new in (int(c.group()) + 1, int(c.group()) - 1):
            if not INT32_MIN <= new <= INT32_MAX:
                continue
            if is_right_operand and binop.group(2) in ("shl", "lshr", "ashr") and not 0 <= new < 32:
                continue  # an over-wide shift is poison, not a plausible slip
            if is_right_operand and binop.group(2) in ("sdiv", "udiv", "srem", "urem") and new == 0:
                continue  # a division by zero only crashes
            out.append(("constant", line[:c.start()] + str(new) + line[c.end():]))
    return out


def _fix_declarations(text):
    """After min <-> max the IR may call an intrinsic it does not declare, or declare one it no
    longer calls: declare exactly the functions it calls."""
    lines = text.split("\n")
    body = "\n".join(line for line in lines if not line.startswith("declare ")).rstrip("\n")
    declared = {_DECLARE.match(line).group(1): line for line in lines if line.startswith("declare ")}
    needed = []
    for name in dict.fromkeys(re.findall(r"@([\w.$]+)\(", body)):
        if name in declared:
            needed.append(declared[name])
        elif m := re.fullmatch(r"llvm\.[su](?:min|max)\.(i\d+)", name):
            needed.append(f"declare {m.group(1)} @{name}({m.group(1)}, {m.group(1)})")
    return body + ("\n\n" + "\n".join(needed) if needed else "")


def _loop_control_lines(ir):
    """Indices of the lines that decide how often a loop runs: the conditional branches that
    steer control into a loop or out of it, and every line their conditions depend on. Mutating
    one (a flipped loop test, an induction step 1 -> 2, smax -> smin on a trip count) is how a
    loser comes to loop (nearly) forever, which costs a timeout: those mutations are tried last."""
    lines, found, function = ir.split("\n"), set(), None
    for i, line in enumerate(lines):
        if line.startswith("define "):
            function = []
        elif line == "}":
            found |= _loop_control_in_function(lines, function)
            function = None
        elif line and function is not None:
            function.append(i)
    return found


def _loop_control_in_function(lines, indices):
    # the control-flow graph: blocks (the entry block has no label) and their successors
    block_of, successors, block = {}, {"entry": []}, "entry"
    for i in indices:
        if m := re.fullmatch(r"([\w.]+):", lines[i]):
            block = "%" + m.group(1)
            successors[block] = []
        else:
            block_of[i] = block
            successors[block] += re.findall(r"label (%[\w.]+)", lines[i])

    def reach(start, edges):
        seen, todo = set(), list(start)
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(edges[node])
        return seen

    in_loop = {b for b in successors if b in reach(successors[b], successors)}
    steering = [i for i in block_of if lines[i].strip().startswith(("br i1", "switch"))
                and len({frozenset(reach([s], successors) & in_loop)
                         for s in re.findall(r"label (%[\w.]+)", lines[i])}) > 1]
    # data dependences: on the line defining each operand and, for a load at -O0, on every
    # store to the same alloca
    defined_by, stores_to = {}, {}
    for i in block_of:
        line = lines[i].strip()
        if m := re.match(r"(%[\w.]+) = ", line):
            defined_by[m.group(1)] = i
        elif m := re.match(r"store .*, \S+ (%[\w.]+)$", line):
            stores_to.setdefault(m.group(1), []).append(i)
    depends_on = {}
    for i in block_of:
        rhs = re.sub(r"label %[\w.]+|, %[\w.]+ \]", "", lines[i].strip().split(" = ", 1)[-1])
        depends_on[i] = set()
        for register in re.findall(r"%[\w.]+", rhs):
            depends_on[i] |= ({defined_by[register]} if register in defined_by else set())
            depends_on[i] |= set(stores_to.get(register, ())) - {i}
    # a branch whose test reads a loop-carried value (one on a dependency cycle) steers a loop
    # too, nested ones included, whose exits the block-level test above cannot see
    loop_carried = {i for i in depends_on if i in reach(depends_on[i], depends_on)}
    steering += [i for i in block_of if lines[i].strip().startswith("br i1")
                 and reach(depends_on[i], depends_on) & loop_carried]
    return reach(steering, depends_on)


def mutations(ir):
    """All single-point mutations of an IR text, as (kind, text, steers_a_loop), in line order."""
    lines, loop_control, out = ir.split("\n"), _loop_control_lines(ir), []
    for i, line in enumerate(lines):
        if not line.startswith("  "):
            continue  # instructions only: not the signature, block labels or declarations
        for kind, new_line in _line_mutations(line):
            text = "\n".join(lines[:i] + [new_line] + lines[i + 1:])
            out.append((kind, _fix_declarations(text) if kind == "minmax" else text, i in loop_control))
    return out


def loser_candidates(winners, rng, count):
    """Up to `count` distinct mutations of the winners, in the order to try them: from each winner
    in turn (so that losers come from several levels), of a kind drawn at random each time (else
    the many constants crowd out the rarer kinds), those that leave loops alone first."""
    orders = []
    for ir in winners:
        by_kind = {}
        for mutation in mutations(ir):
            by_kind.setdefault(mutation[0], []).append(mutation)
        order = []
        while by_kind:
            kind = rng.choice(sorted(by_kind))
            pool = by_kind[kind]
            order.append(pool.pop(rng.randrange(len(pool))))
            if not pool:
                del by_kind[kind]
        orders.append(order)
    rng.shuffle(orders)
    interleaved = [order[depth] for depth in range(max(map(len, orders), default=0))
                   for order in orders if depth < len(order)]
    interleaved.sort(key=lambda mutation: mutation[2])  # stable: loops last, drawn order otherwise
    seen, picked = set(winners), []
    for _, text, _ in interleaved:
        if text not in seen and len(picked) < count:
            seen.add(text)
            picked.append(text)
    return picked


# ----------------------------------------------------------------------------- checking by execution
# The IRs to check go into one LLVM module, each with its functions renamed (@f -> @f__3), behind a
# dispatcher @f that calls the IR whose index is in the environment variable IR_VARIANT. The module
# is linked once with the C harness of tasks.py (compiled once per arity and process) and the binary
# runs once per IR: one link for many IRs instead of one each.

_VARIANT_SELECTOR = f"""
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/time.h>
/* added by ir.py: the index of the IR that f dispatches to (${VARIANT_ENV}), and a budget of CPU
   time (${CPU_LIMIT_ENV}, milliseconds) armed before f first runs: SIGPROF then stops a looping IR,
   even if ir.py dies first. (Armed here, not by Python before exec, spawning stays cheap.) */
int ir_variant(void) {{
    static int chosen = -1;
    if (chosen < 0) {{
        const char *variant = getenv("{VARIANT_ENV}"), *ms = getenv("{CPU_LIMIT_ENV}");
        struct rlimit no_core_file = {{0, 0}};
        setrlimit(RLIMIT_CORE, &no_core_file);
        if (ms) {{
            struct itimerval budget = {{{{0, 0}}, {{atol(ms) / 1000, atol(ms) % 1000 * 1000}}}};
            setitimer(ITIMER_PROF, &budget, NULL);
        }}
        chosen = variant ? atoi(variant) : 0;
    }}
    return chosen;
}}
"""
_harness_objects = {}  # (pid, n_args) -> the compiled harness main + ir_variant, as bytes


def _harness_object(n_args):
    key = (os.getpid(), n_args)  # a forked worker builds its own
    if key not in _harness_objects:
        prototype = "int f(" + ", ".join(f"int {name}" for name in tasks.ARG_NAMES[:n_args]) + ");"
        source = tasks.harness(prototype, "c", n_args) + _VARIANT_SELECTOR
        with tempfile.TemporaryDirectory(prefix="ir_harness_") as tmp:
            with open(os.path.join(tmp, "harness.c"), "w") as fh:
                fh.write(source)
            done = subprocess.run(["clang", "-O1", "-w", "-c", "harness.c", "-o", "harness.o"],
                                  cwd=tmp, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"the C harness of tasks.py does not compile:\n{done.stderr}\n{source}")
            with open(os.path.join(tmp, "harness.o"), "rb") as fh:
                _harness_objects[key] = fh.read()
    return _harness_objects[key]


def _variant_module(irs, n_args):
    """One module: IR k with every function it defines renamed @name -> @name__k, the union of
    their declarations, and the dispatcher @f."""
    bodies, declarations = [], {}
    for k, ir in enumerate(irs):
        body = "\n".join(line for line in ir.split("\n") if not line.startswith("declare "))
        for name in re.findall(r"^define .*?@([\w.$]+)\(", body, flags=re.M):
            body = re.sub(rf"@{re.escape(name)}(?![\w.$])", f"@{name}__{k}", body)
        bodies.append(body.strip())
        for line in ir.split("\n"):
            if line.startswith("declare "):
                declarations.setdefault(_DECLARE.match(line).group(1), line)
    params = ", ".join(f"i32 %a{i}" for i in range(n_args))
    cases = " ".join(f"i32 {k}, label %v{k}" for k in range(len(irs)))
    dispatcher = [f"define i32 @f({params}) {{", "entry:", "  %k = call i32 @ir_variant()",
                  f"  switch i32 %k, label %none [ {cases} ]"]
    for k in range(len(irs)):
        dispatcher += [f"v{k}:", f"  %r{k} = call i32 @f__{k}({params})", f"  ret i32 %r{k}"]
    dispatcher += ["none:", "  unreachable", "}"]
    declares = "\n".join(["declare i32 @ir_variant()", *declarations.values()])
    return "\n\n".join([declares, "\n".join(dispatcher), *bodies]) + "\n"


def _clang_ir(module_text, workdir, args):
    with open(os.path.join(workdir, "module.ll"), "w") as fh:
        fh.write(module_text)
    return subprocess.run(["clang", "-O0", "-w", "module.ll", *args], cwd=workdir, capture_output=True, text=True)


def build_binary(irs, n_args, workdir):
    """Link IRs into one test binary in workdir. Returns (path, compiles): compiles[k] says
    whether IR k is valid IR; an invalid one is never run (it would run IR 0 instead)."""
    require_clang()
    with open(os.path.join(workdir, "harness.o"), "wb") as fh:
        fh.write(_harness_object(n_args))
    compiles = [True] * len(irs)
    done = _clang_ir(_variant_module(irs, n_args), workdir, ["harness.o", "-o", "prog"])
    if done.returncode != 0:  # rare: find the culprits one by one, link the others
        compiles = [_clang_ir(ir, workdir, ["-c", "-o", "one.o"]).returncode == 0 for ir in irs]
        if not any(compiles):
            raise RuntimeError(f"none of these IRs compiles:\n{done.stderr}")
        stand_in = irs[compiles.index(True)]
        valid = [ir if ok else stand_in for ir, ok in zip(irs, compiles)]  # keeps the indices
        done = _clang_ir(_variant_module(valid, n_args), workdir, ["harness.o", "-o", "prog"])
        if done.returncode != 0:
            raise RuntimeError(f"cannot link the IR test binary:\n{done.stderr}")
    return os.path.join(workdir, "prog"), compiles


def run_ir(binary, k, tests, cpu_seconds):
    """Run IR k of a test binary on the tests: "pass", "fail" (a wrong output or a crash) or
    "timeout" (it needed more than cpu_seconds of CPU time). A budget of CPU time, unlike one of
    wall-clock time, gives the same verdict on a busy machine as on an idle one."""
    stdin = "".join(f"{line}\n" for line, _ in tests)
    env = {"PATH": "/usr/bin:/bin", VARIANT_ENV: str(k), CPU_LIMIT_ENV: str(max(1, round(1000 * cpu_seconds)))}
    try:
        done = subprocess.run([binary], input=stdin, env=env, cwd=os.path.dirname(binary),
                              capture_output=True, text=True, timeout=10 + 30 * cpu_seconds)
    except subprocess.TimeoutExpired:  # a backstop: starved of CPU for that long, or stuck
        return "timeout"
    if done.returncode == -signal.SIGPROF:
        return "timeout"
    return "pass" if done.returncode == 0 and done.stdout.split("\n")[:-1] == [out for _, out in tests] else "fail"


def check_irs(irs, tests, n_args, cpu_seconds=WINNER_CPU_SECONDS):
    """The verdict of every IR on the tests: "pass", "fail", "timeout" or "compile_error"."""
    with tempfile.TemporaryDirectory(prefix="ir_check_") as tmp:
        binary, compiles = build_binary(irs, n_args, tmp)
        return [run_ir(binary, k, tests, cpu_seconds) if ok else "compile_error" for k, ok in enumerate(compiles)]


# ----------------------------------------------------------------------------- groups

def make_groups(programs, max_losers=MAX_LOSERS, max_chars=MAX_IR_CHARS):
    """GEPO groups for a batch of programs, each given as (c_source, tests, n_args, seed): for each,
    {"winners", "winner_levels", "losers"} or None (no winner within max_chars, or no mutation
    that fails a test). winner_levels[i] lists the levels (e.g. ["O1", "O2"]) whose IR is
    winners[i]. A group depends only on its own program and seed, never on the batch around it."""
    if not programs:
        return []
    for c_source, tests, n_args, _ in programs:
        if n_args not in (1, 2, 3):
            raise ValueError(f"n_args must be 1, 2 or 3, got {n_args!r}")
        if not tests:
            raise ValueError(f"no tests for this C function (need [stdin_line, expected_stdout_line] pairs):\n{c_source}")
    plans = []  # per program: (winners, levels, candidates)
    for (_, _, _, seed), ir_by_level in zip(programs, compile_to_ir([p[0] for p in programs])):
        winners, levels = dedupe_levels(ir_by_level, max_chars)
        plans.append((winners, levels, loser_candidates(winners, random.Random(seed), max_losers * CANDIDATES_PER_LOSER)))
    groups = [None] * len(programs)
    for n_args in sorted({p[2] for p in programs}):
        members = [i for i, p in enumerate(programs) if p[2] == n_args and plans[i][0]]
        irs = [ir for i in members for ir in plans[i][0] + plans[i][2]]
        if not irs:
            continue
        with tempfile.TemporaryDirectory(prefix="ir_group_") as tmp:
            binary, compiles = build_binary(irs, n_args, tmp)
            start = 0
            for i in members:
                groups[i] = _judge(programs[i], *plans[i], binary, compiles, start, max_losers)
                start += len(plans[i][0]) + len(plans[i][2])
    return groups


def _judge(program, winners, levels, candidates, binary, compiles, start, max_losers):
    """Run one program's IRs (from index `start` of the binary on) and keep its losers."""
    c_source, tests = program[0], program[1]
    for k, (ir, level) in enumerate(zip(winners, levels), start=start):
        verdict = run_ir(binary, k, tests, WINNER_CPU_SECONDS) if compiles[k] else "compile_error"
        if verdict != "pass":
            raise RuntimeError(f"the -{level[0]} IR of this C function does not pass its own tests "
                               f"({verdict}): a bug in ir.py or in the tests.\n{c_source}\n{ir}\n{tests}")
    failing, looping = [], []
    for k, ir in enumerate(candidates, start=start + len(winners)):
        if len(failing) == max_losers:
            break
        verdict = run_ir(binary, k, tests, LOSER_CPU_SECONDS) if compiles[k] else "compile_error"
        if verdict == "fail":
            failing.append(ir)
        elif verdict == "timeout":
            looping.append(ir)  # inequivalent too; kept only when terminating ones run short
    losers = (failing + looping)[:max_losers]
    return {"winners": winners, "winner_levels": levels, "losers": losers} if losers else None


def make_group(c_source, tests, n_args, seed, max_losers=MAX_LOSERS, max_chars=MAX_IR_CHARS):
    """The group of one C function (see make_groups; prefer batches, they are much faster)."""
    return make_groups([(c_source, tests, n_args, seed)], max_losers, max_chars)[0]


def _demo():
    program, tests = tasks.generate(2)
    c_source = tasks.render(program, "c")
    group = make_group(c_source, tests, program.n_args, seed=0)
    print(f"{c_source}\ntests: {tests}\n")
    for ir, levels in zip(group["winners"], group["winner_levels"]):
        print(f"--- winner ({' '.join('-' + level for level in levels)}), {len(ir)} chars\n{ir}\n")
    for ir in group["losers"]:
        print(f"--- loser, {len(ir)} chars\n{ir}\n")


def _stats(n_programs, batch_size=50):
    """Groups for the first n_programs of tasks.generate: time per program, sizes, IR lengths."""
    programs = []
    for seed in range(n_programs):
        program, tests = tasks.generate(seed)
        programs.append((tasks.render(program, "c"), tests, program.n_args, seed))
    def cpu_seconds():  # ours and our children's (clang, the test binaries): robust to a busy machine
        return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
                   for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    start, start_cpu = time.time(), cpu_seconds()
    groups = [g for i in range(0, n_programs, batch_size) for g in make_groups(programs[i:i + batch_size]) if g]
    wall, cpu = time.time() - start, cpu_seconds() - start_cpu
    print(f"{len(groups)} groups from {n_programs} programs (batches of {batch_size}): {wall:.1f} s wall, "
          f"{cpu:.1f} s CPU = {1000 * cpu / n_programs:.0f} ms CPU per program")
    for name in ("winners", "losers"):
        sizes = collections.Counter(len(g[name]) for g in groups)
        lengths = sorted(len(ir) for g in groups for ir in g[name])
        percentiles = " ".join(f"p{p}={lengths[int(p / 100 * (len(lengths) - 1))]}" for p in (0, 10, 50, 90, 100))
        print(f"{name} per group {dict(sorted(sizes.items()))}; chars {percentiles}")
    print("levels merged:", collections.Counter(" ".join(levels) for g in groups for levels in g["winner_levels"]).most_common(6))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        _stats(int(sys.argv[1]))
    else:
        _demo()
