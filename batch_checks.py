"""
batch_checks.py: the programs that check many programs in one compiler start, one for each
batched language of languages.py's tables (Language.batched). A small program costs its compiler
little; starting the compiler (a JVM, V8, the Go toolchain) is most of a check, so a batch of a
step's programs shares one start, and each program still gets its own verdict and message.

Each one takes the programs' directories as its arguments, each holding a source where
languages.check wrote it (its prog/ directory is what runs). In each directory it leaves
error.txt (the program's message) if the program fails, then an empty file "done": a directory
without "done" was not reached (the batch ran out of its budget first), and reward.py checks that
program alone. They run inside the sandbox, as the programs do, and none runs what it checks.

    import batch_checks
    batch_checks.PYTHON_CHECK_MANY        # python3 -c SCRIPT dir1 dir2 ...

This file imports nothing: it is text in other languages, which languages.py puts in commands.
"""

JAVAC_MANY = """\
import java.io.*;
import javax.tools.*;

class Javac {
    public static void main(String[] dirs) throws IOException {
        JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
        String classPath = System.getProperty("javac.classpath", "");  // a benchmark harness's libraries
        for (String dir : dirs) {
            ByteArrayOutputStream said = new ByteArrayOutputStream();
            if (javac.run(null, said, said, "-proc:none", "-encoding", "UTF-8", "-nowarn", "-cp", classPath,
                          "-d", dir + "/prog", dir + "/Main.java") != 0)
                try (OutputStream error = new FileOutputStream(dir + "/error.txt")) { said.writeTo(error); }
            new FileOutputStream(dir + "/done").close();
        }
    }
}
"""
PYTHON_CHECK_MANY = """\
import sys, traceback
for d in sys.argv[1:]:
    try:
        compile(open(d + '/prog/main.py', 'rb').read(), d + '/prog/main.py', 'exec')
    except Exception as error:
        open(d + '/error.txt', 'w').write(''.join(traceback.format_exception_only(error)))
    open(d + '/done', 'w').close()
"""
# as `node --check` does: the source compiled as the body of CommonJS's module function
JAVASCRIPT_CHECK_MANY = """\
const fs = require("fs"), vm = require("vm");
for (const dir of process.argv.slice(1)) {
    const file = dir + "/prog/main.js";
    try {
        vm.compileFunction(fs.readFileSync(file, "utf8"), ["exports", "require", "module", "__filename", "__dirname"],
                           {filename: file});
    } catch (error) {
        fs.writeFileSync(dir + "/error.txt", String(error.stack).split("\\n    at ")[0]);
    }
    fs.writeFileSync(dir + "/done", "");
}
"""
# `bash -n` and `php -l` check one file: one child per program, without a shell (none is in the sandbox)
BASH_CHECK_MANY = 'for d; do e=$("$BASH" -n "$d/prog/main.sh" 2>&1) || printf "%s\\n" "$e" > "$d/error.txt"; : > "$d/done"; done'
PHP_CHECK_MANY = """\
foreach (array_slice($argv, 1) as $dir) {
    $lint = proc_open([PHP_BINARY, "-n", "-l", "$dir/prog/main.php"], [1 => ["pipe", "w"], 2 => ["pipe", "w"]], $pipes);
    $said = stream_get_contents($pipes[2]) . stream_get_contents($pipes[1]);
    if (proc_close($lint) != 0) file_put_contents("$dir/error.txt", $said);
    touch("$dir/done");
}
"""
# go stops a whole build at a program it cannot load (an unknown import), and builds a package
# that is not main without making a program: `go list` finds those first, and the others are
# built by one `go build`, whose messages come under a "# <package>" line each. A program given
# neither a binary nor a message is left to a build of its own.
GO_BUILD_MANY = """\
package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

func main() {
	os.Chdir(filepath.Dir(os.Args[1])) // the programs' directories are siblings
	list := []string{"list", "-e", "-json"}
	for _, dir := range os.Args[1:] {
		list = append(list, "./"+filepath.Base(dir))
	}
	said, _ := exec.Command("go", list...).Output()
	decoder, dirOf := json.NewDecoder(strings.NewReader(string(said))), map[string]string{}
	build := []string{"build", "-ldflags=-s -w", "-o", "bin/"} // -s -w: no symbol table nor DWARF to link
	for decoder.More() {
		var found struct {
			Dir, ImportPath, Name string
			Error           *struct{ Err string }
			DepsErrors      []struct{ Err string }
		}
		if decoder.Decode(&found) != nil {
			return
		}
		dir := filepath.Base(found.Dir)
		if found.Error != nil {
			finish(dir, found.Error.Err+"\\n")
		} else if len(found.DepsErrors) > 0 {
			finish(dir, found.DepsErrors[0].Err+"\\n")
		} else if found.Name != "main" { // go build would make no program of it
			finish(dir, "package "+found.Name+" is not a main package\\n")
		} else {
			dirOf[found.ImportPath] = dir
			build = append(build, "./"+dir)
		}
	}
	if len(dirOf) == 0 {
		return
	}
	said, _ = exec.Command("go", build...).CombinedOutput()
	messages, owner := map[string]string{}, ""
	for _, line := range strings.SplitAfter(string(said), "\\n") {
		if header := strings.TrimPrefix(line, "# "); header != line {
			owner = dirOf[strings.TrimSpace(header)]
		} else if owner != "" {
			messages[owner] += strings.TrimPrefix(line, owner+"/")
		}
	}
	left := false
	for _, dir := range dirOf {
		if os.Rename(filepath.Join("bin", dir), filepath.Join(dir, "prog", "main")) == nil {
			finish(dir, "")
		} else if message, failed := messages[dir]; failed {
			finish(dir, message)
		} else {
			left = true
		}
	}
	if left { // go's words name no program: alone, a program fails with them
		os.Stderr.Write(said)
		os.Exit(1)
	}
}

func finish(dir, message string) {
	if message != "" {
		os.WriteFile(filepath.Join(dir, "error.txt"), []byte(message), 0o644)
	}
	os.WriteFile(filepath.Join(dir, "done"), nil, 0o644)
}
"""


# ----------------------------------------------------------------------------- the public benchmarks' checks

# Every program is a module of its own (benchmarks.py ends each with `export {}`), so one
# TypeScript program holds a whole batch without their names meeting; each file is type-checked
# and emitted alone, as `tsc --target esnext` would (MultiPL-E's harness), into its prog/main.js.
TYPESCRIPT_CHECK_MANY = """\
const ts = require("%s/lib/typescript.js"), fs = require("fs");
const dirs = process.argv.slice(1), options = {target: ts.ScriptTarget.ESNext, module: ts.ModuleKind.CommonJS};
const program = ts.createProgram(dirs.map(dir => dir + "/main.ts"), options);
const host = {getCanonicalFileName: name => name, getCurrentDirectory: () => "/", getNewLine: () => "\\n"};
for (const dir of dirs) {
    const file = program.getSourceFile(dir + "/main.ts");
    const said = ts.getPreEmitDiagnostics(program, file);
    if (said.length) fs.writeFileSync(dir + "/error.txt", ts.formatDiagnostics(said, host));
    else program.emit(file, (name, text) => fs.writeFileSync(dir + "/prog/main.js", text));
    fs.writeFileSync(dir + "/done", "");
}
"""  # % the TypeScript package's directory
# `go test -c` builds one package's test program per call (Go before 1.21): one call after
# another in one sandbox. Go's build cache (in the sandbox's $HOME) starts as a copy of the one
# the warm-up made (-keep: in {out}), where testify and what it imports (net/http among them,
# rebuilt without cgo) are compiled once and for all. Vet is off.
GO_TEST_MANY = """\
package main

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
)

func main() {
	dirs, made, start := os.Args[1:], filepath.Join(os.Getenv("HOME"), "gocache"), os.Getenv("GOCACHE_START")
	if dirs[0] == "-keep" {
		dirs, made = dirs[1:], filepath.Join(filepath.Dir(dirs[1]), "gocache")
	}
	os.Setenv("GOCACHE", made)
	os.Chdir(filepath.Dir(dirs[0])) // the programs' directories are siblings
	filepath.WalkDir(start, func(path string, entry fs.DirEntry, err error) error {
		if err == nil {
			to := filepath.Join(made, path[len(start):])
			if entry.IsDir() {
				os.MkdirAll(to, 0o755)
			} else if data, err := os.ReadFile(path); err == nil {
				os.WriteFile(to, data, 0o644)
			}
		}
		return nil
	})
	for _, dir := range dirs {
		name := filepath.Base(dir)
		os.MkdirAll(filepath.Join(name, "prog"), 0o755)
		said, failed := exec.Command("go", "test", "-c", "-vet=off", "-ldflags=-s -w", "-o",
			filepath.Join(name, "prog", "main"), "./"+name).CombinedOutput()
		if failed != nil {
			os.WriteFile(filepath.Join(name, "error.txt"), append(said, []byte(failed.Error())...), 0o644)
		}
		os.WriteFile(filepath.Join(name, "done"), nil, 0o644)
	}
}
"""
GO_TEST_WARM = ('package main\n\nimport (\n\t"io"\n\t"os"\n\t"testing"\n\t"github.com/stretchr/testify/assert"\n)\n\n'
                'func TestMain(m *testing.M) { io.Copy(os.Stdout, os.Stdin); os.Exit(m.Run()) }\n\n'
                'func TestWarm(t *testing.T) { assert.Equal(t, 1, 1) }\n')
