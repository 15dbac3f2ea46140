"""
mounts.py: the minimal mount set, the one system a sandbox sees: the host paths of its runtime
(an interpreter, or a compiler's programs and directories: languages.py knows which), the
shared libraries their ELF files load (the dynamic loader's --list, run once per file and
process), the symbolic links on the way to them and the loader's cache, mounted read-only at
their own paths. sandbox.py hands these words to bubblewrap.

    words = mounts.system_mounts(("/usr/bin/python3", "/usr/lib/python3.11"), mounts.loader("/usr/bin/true"))
    # ["--symlink", "usr/lib", "/lib", "--ro-bind", "/tmp/oorl-sandbox-roots-.../usr", "/usr", ...]

The sandbox is built from what is allowed rather than fenced off from what is not (an exec
allow-list: Landlock, or seccomp on execve) because that holds by construction: what is not
mounted cannot be run, read or loaded by any means (a shell, posix_spawn, ctypes, a static
binary written to /tmp still finds no python3), and it asks nothing of the kernel beyond the
mount namespace bubblewrap already makes.
"""
import atexit
import functools
import os
import re
import shutil
import struct
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

# Every runtime also holds these, where they exist: the loader's cache (libraries are found
# without probing directories) and glibc's locale for the C.UTF-8 the sandbox's environment sets.
SYSTEM_FILES = ("/etc/ld.so.cache", "/usr/lib/locale/C.utf8", "/usr/lib/locale/locale-archive")


def system_mounts(runtime, loader):
    """bubblewrap's words that make a root holding only `runtime` (host paths) and SYSTEM_FILES,
    read-only: each path, what the symbolic links on the way to it and inside it point to, and
    the shared libraries its ELF files load (as `loader`, the dynamic loader, lists them),
    recursively, and the links themselves where they lie outside what is mounted. Computed once
    per runtime and process."""
    if not os.path.isdir(_trees()):  # removed meanwhile (a cleaner of old files in /tmp): made again
        _trees.cache_clear()
        _tree_mounts.cache_clear()
    return _tree_mounts(tuple(sorted({*runtime, *SYSTEM_FILES})), loader)


@functools.lru_cache(maxsize=None)
def _tree_mounts(runtime, loader):
    """system_mounts' words for a sorted tuple of paths. Each mount costs the sandbox time to
    make and to tear down, and a runtime has dozens of files, so the files and links are
    gathered in a private copy of the directory tree, as hard links (no copy of their data): a
    mount per top-level directory of it, plus one per directory of the runtime. A file that
    this process cannot hard-link (another file system, or not its own file under
    fs.protected_hardlinks) is mounted on its own."""
    links, mounted, queue = {}, set(), list(runtime)
    while queue:
        loaded = []  # ELF files met in this round: the loader lists what they load
        for path in queue:
            real = _resolve(path, links)
            if real in mounted or not os.path.exists(real):
                continue
            mounted.add(real)
            if not os.path.isdir(real):
                loaded.append(real)
                continue
            for kind, inside in _walk(real):
                if kind == "file":
                    loaded.append(inside)
                elif not os.path.realpath(inside).startswith(real + "/"):  # a link out of the directory
                    queue.append(inside)
        queue = sorted(_shared_libraries(tuple(filter(_loads_libraries, loaded)), loader))
    # nothing inside a mounted directory is mounted again, nor a link made there (the mount shows it)
    tops = sorted(path for path in mounted if not any(path.startswith(other + "/") for other in mounted))
    links = {link: target for link, target in links.items() if not any(link.startswith(top + "/") for top in tops)}
    tree, alone = tempfile.mkdtemp(prefix="root-", dir=_trees()), []
    for path in tops:  # a directory or a file that cannot be linked: an empty mount point in the tree
        _make_parents(tree + path)
        if os.path.isdir(path):
            os.mkdir(tree + path)
            alone.append(path)
            continue
        try:
            os.link(path, tree + path)
        except OSError:
            open(tree + path, "w").close()
            alone.append(path)
    for link, target in links.items():
        _make_parents(tree + link)
        os.symlink(target, tree + link)
    words = []
    for name in sorted(os.listdir(tree)):  # (/lib of a merged /usr is a link)
        top = os.path.join(tree, name)
        words += ["--symlink", os.readlink(top), f"/{name}"] if os.path.islink(top) else ["--ro-bind", top, f"/{name}"]
    for path in alone:
        words += ["--ro-bind", path, path]
    return words


@functools.lru_cache(maxsize=None)
def _trees():
    """This process's directory for system_mounts' trees, removed at its exit (and a dead
    process's, found here, at the next one's start)."""
    for name in os.listdir(tempfile.gettempdir()):
        pid = re.fullmatch(r"oorl-sandbox-roots-(\d+)-.*", name)
        if pid and not os.path.exists(f"/proc/{pid.group(1)}"):
            shutil.rmtree(os.path.join(tempfile.gettempdir(), name), ignore_errors=True)
    directory, creator = tempfile.mkdtemp(prefix=f"oorl-sandbox-roots-{os.getpid()}-"), os.getpid()
    atexit.register(lambda: os.getpid() == creator and shutil.rmtree(directory, ignore_errors=True))  # (not a fork's)
    return directory


def _make_parents(path):
    """Makes the missing directories above `path`, traversable by a root trainer's sandbox uid."""
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        _make_parents(parent)
        os.mkdir(parent)
        os.chmod(parent, 0o755)


def _resolve(path, links):
    """The real path of `path`, recording in `links` {link: target} each symbolic link met on the
    way (a /lib -> usr/lib of a merged /usr, an /etc/alternatives entry)."""
    pending, real = [part for part in path.split("/") if part], "/"
    for _ in range(256):  # (more hops than that: a loop; the path is then taken as it is)
        if not pending:
            break
        part = pending.pop(0)
        candidate = os.path.dirname(real) if part == ".." else real if part == "." else os.path.join(real, part)
        if os.path.islink(candidate):
            target = os.readlink(candidate)
            links[candidate] = target
            real = "/" if target.startswith("/") else real
            pending = [p for p in target.split("/") if p] + pending
        else:
            real = candidate
    return real


def _walk(directory):
    """("link", path) for each symbolic link under a directory, ("file", path) for each file that
    may be an ELF executable or shared object (executable, or named *.so*)."""
    stack = [directory]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:  # unreadable: the sandbox cannot read it either
            continue
        for entry in entries:
            if entry.is_symlink():
                yield "link", entry.path
            elif entry.is_dir():
                stack.append(entry.path)
            elif entry.is_file() and (".so" in entry.name or entry.stat().st_mode & 0o111):
                yield "file", entry.path


def _segments(path):
    """[(type, offset, size)] of the program headers of a 64-bit ELF file; [] for any other file."""
    try:
        with open(path, "rb") as file:
            header = file.read(64)
            if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2:  # (ELFCLASS64)
                return []
            order = "<" if header[5] == 1 else ">"
            table, = struct.unpack_from(order + "Q", header, 32)  # e_phoff
            entry_size, entries = struct.unpack_from(order + "HH", header, 54)  # e_phentsize, e_phnum
            file.seek(table)
            data = file.read(entry_size * entries)
        return [(kind, offset, size) for kind, _, offset, _, _, size, _, _ in
                (struct.unpack_from(order + "IIQQQQQQ", data, i * entry_size) for i in range(entries))]
    except (OSError, struct.error):
        return []


def _loads_libraries(path):
    """True for an ELF file that the dynamic loader links (one with a PT_DYNAMIC segment): the
    others (static programs, data) it cannot list, and may crash on."""
    return any(kind == 2 for kind, _, _ in _segments(path))


def _shared_libraries(paths, loader):
    """The shared libraries the dynamic loader `loader` loads for each of `paths`, the loader included."""
    if loader is None or not paths:
        return set()

    def listed(path):  # (the loader's --list traces the loading; it runs none of the file's code)
        done = subprocess.run([loader, "--list", path], capture_output=True, text=True, env={"LC_ALL": "C"})
        return re.findall(r"^\s+(?:\S+ => )?(/\S+) \(0x", done.stdout, re.MULTILINE)

    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        return {library for found in pool.map(listed, paths) for library in found} | {loader}


@functools.lru_cache(maxsize=None)
def loader(program):
    """The dynamic loader that the ELF executable `program` names (its PT_INTERP), or None (a
    static program: a machine of static programs has no loader to list libraries with)."""
    program = os.path.realpath(program)
    for kind, offset, size in _segments(program):
        if kind == 3:
            with open(program, "rb") as file:
                file.seek(offset)
                return file.read(size).rstrip(b"\0").decode()
    return None
