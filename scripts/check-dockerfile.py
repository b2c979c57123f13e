#!/usr/bin/env python3
"""Runs a Dockerfile's build stage without a Docker engine, to catch a broken image build.

    scripts/check-dockerfile.py [--file Dockerfile] [--context .] [--stage builder]

What it does, as `docker build` would:
  * parses the Dockerfile (line continuations, comments, ARG before FROM, stages);
  * builds the context as the engine sees it: the context directory filtered by
    `<Dockerfile>.dockerignore` or `.dockerignore` (patterns in order, `!` re-includes,
    the last match wins, `**` spans directories);
  * runs the build stage's instructions: WORKDIR, ENV, ARG, COPY from the context, RUN.
    The stage's filesystem is a scratch directory holding ONLY what the COPY lines put
    there; each RUN is `/bin/sh -c` (the engine's default shell; SHELL changes it) inside
    a bubblewrap sandbox whose `/` is that scratch directory, with the host's /usr and
    /etc read-only, the host's Rust toolchain read-only in place of the `rust` image's
    (the FROM tag's version is checked against it), and the cargo registry shared with
    the host. The repository is not visible to the build;
  * checks every `COPY --from=<stage>` source of the final stage: it exists, the
    ENTRYPOINT binary is an executable ELF file (size and newest glibc symbol printed),
    the final stage does not run as root; with --smoke=ARGS, runs that binary with ARGS
    in an empty root holding only distroless cc's shared libraries, as user 65532.

Not emulated: the base image's own files (the host's /usr stands in for them), ADD,
RUN --mount, ONBUILD, HEALTHCHECK and other instructions that do not change the build
stage's files; they are refused or skipped with a note.

Caches, so a second run is fast: the stage's `target/` directory (the WORKDIR of the
first RUN + `/target`) is bind-mounted from ~/.cache/ottoscaler/check-image/target, and
crates come from the host's cargo registry ($CARGO_HOME/registry, downloaded from
crates.io when missing).

Exit status: 0 when the stage builds and its outputs check out, 1 when an instruction
fails (the message names it, with its Dockerfile line), 2 on a usage or setup error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

PROG = "check-dockerfile"
CACHE_DIR = Path.home() / ".cache" / "ottoscaler" / "check-image"
# The environment of the official `rust` images (docker-library/rust).
RUST_IMAGE_ENV = {
    "RUSTUP_HOME": "/usr/local/rustup",
    "CARGO_HOME": "/usr/local/cargo",
    "PATH": "/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class CheckFailed(Exception):
    """The Dockerfile does not build; the message says where and why."""


class SetupError(Exception):
    """The check itself cannot run (missing tool, unreadable file, bad arguments)."""


def log(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


# --- Dockerfile parsing ------------------------------------------------------------------


@dataclass
class Instruction:
    line: int  # 1-based line of the instruction's first line
    keyword: str  # upper case
    args: str  # the rest, continuations joined
    text: str  # as written, for messages

    def where(self, dockerfile: Path) -> str:
        short = self.text if len(self.text) <= 100 else self.text[:97] + "..."
        return f"{dockerfile}:{self.line}: {short}"


@dataclass
class Stage:
    index: int
    base: str
    name: str | None
    instruction: Instruction
    body: list[Instruction] = field(default_factory=list)


def parse_dockerfile(text: str) -> tuple[list[Instruction], str]:
    """Instructions of a Dockerfile, and its escape character."""
    lines = text.splitlines()
    escape = "\\"
    # Parser directives: `# escape=`` ` before anything else.
    for raw in lines:
        m = re.match(r"^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$", raw)
        if not m:
            break
        if m.group(1).lower() == "escape":
            escape = m.group(2)
    instructions: list[Instruction] = []
    i = 0
    while i < len(lines):
        raw = lines[i]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i
        parts = []
        current = raw
        while True:
            body = current.rstrip()
            if body.endswith(escape):
                parts.append(body[: -len(escape)])
                i += 1
                # Comment and empty lines inside a continued instruction are skipped.
                while i < len(lines) and (
                    not lines[i].strip() or lines[i].lstrip().startswith("#")
                ):
                    i += 1
                if i >= len(lines):
                    break
                current = lines[i]
            else:
                parts.append(current)
                i += 1
                break
        joined = " ".join(p.strip() for p in parts).strip()
        keyword, _, args = joined.partition(" ")
        if "<<" in args and keyword.upper() in ("RUN", "COPY"):
            if re.search(r"<<-?[\"']?[A-Za-z_]", args):
                raise SetupError(
                    f"line {start + 1}: heredocs ({keyword.upper()} <<EOF) are not supported by this check"
                )
        instructions.append(Instruction(start + 1, keyword.upper(), args.strip(), joined))
    return instructions, escape


def split_stages(instructions: list[Instruction]) -> tuple[list[Instruction], list[Stage]]:
    """The instructions before the first FROM (global ARGs), and the stages."""
    preamble: list[Instruction] = []
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = ins.args.split()
            words = [w for w in words if not w.startswith("--")]
            if not words:
                raise SetupError(f"line {ins.line}: FROM without an image")
            name = None
            if len(words) >= 3 and words[1].lower() == "as":
                name = words[2].lower()
            stages.append(Stage(len(stages), words[0], name, ins))
        elif not stages:
            if ins.keyword != "ARG":
                raise SetupError(f"line {ins.line}: {ins.keyword} before the first FROM")
            preamble.append(ins)
        else:
            stages[-1].body.append(ins)
    if not stages:
        raise SetupError("the Dockerfile has no FROM")
    return preamble, stages


def find_stage(stages: list[Stage], ref: str) -> Stage | None:
    for stage in stages:
        if stage.name == ref.lower() or str(stage.index) == ref:
            return stage
    return None


def expand(value: str, env: dict[str, str]) -> str:
    """The engine's variable substitution in WORKDIR, COPY, ENV, ARG, FROM, USER."""

    def sub_braced(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(4)
        current = env.get(name)
        op, word = m.group(2), m.group(3) or ""
        if op == "-":
            return current if current else word
        if op == "+":
            return word if current else ""
        return current or ""

    pattern = re.compile(
        r"\\\$|\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
    )
    return pattern.sub(lambda m: "$" if m.group(0) == "\\$" else sub_braced(m), value)


def key_values(args: str, keyword: str, line: int) -> list[tuple[str, str | None]]:
    """`ENV a=1 b="x y"`, `ENV a 1`, `ARG a`, `ARG a=1` as (key, value) pairs."""
    try:
        words = shlex.split(args, posix=True)
    except ValueError as e:
        raise SetupError(f"line {line}: cannot parse {keyword} {args!r}: {e}") from e
    if not words:
        raise SetupError(f"line {line}: {keyword} without arguments")
    if keyword == "ENV" and "=" not in words[0]:
        key, _, rest = args.partition(" ")
        return [(key, rest.strip())]
    pairs: list[tuple[str, str | None]] = []
    for word in words:
        key, eq, value = word.partition("=")
        pairs.append((key, value if eq else None))
    return pairs


def split_flags(args: str) -> tuple[dict[str, str], str]:
    """Leading `--flag=value` words of COPY/RUN, and the rest."""
    flags: dict[str, str] = {}
    rest = args
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        name, _, value = word[2:].partition("=")
        flags[name] = value
        rest = rest.lstrip()
    return flags, rest


def json_or_words(args: str) -> tuple[list[str], bool]:
    """The exec (JSON array) form, or the shell form split into words."""
    if args.startswith("["):
        try:
            value = json.loads(args)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value, True
    return args.split(), False


# --- .dockerignore -----------------------------------------------------------------------


@dataclass
class IgnorePattern:
    text: str
    exclude: bool  # False for `!` exceptions
    regex: re.Pattern[str]
    parts: list[str]


def _glob_regex(pattern: str) -> str:
    """Go's filepath.Match syntax, plus Docker's `**` (any number of directories)."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern[i : i + 2] == "**":
                i += 2
                if pattern[i : i + 1] == "/":
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                cls = pattern[i + 1 : end]
                if cls.startswith("^") or cls.startswith("!"):
                    cls = "^" + cls[1:]
                out.append("[" + cls.replace("\\", "\\\\") + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def read_dockerignore(path: Path | None) -> list[IgnorePattern]:
    if path is None or not path.exists():
        return []
    patterns = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        exclude = not text.startswith("!")
        body = text if exclude else text[1:].strip()
        body = os.path.normpath(body).lstrip("/") if body else body
        if body in ("", "."):
            body = "."
        patterns.append(
            IgnorePattern(text, exclude, re.compile("^" + _glob_regex(body) + "$"), body.split("/"))
        )
    return patterns


def _matches(pattern: IgnorePattern, rel: str) -> bool:
    """Docker's MatchesOrParentMatches: the path or one of its parent directories."""
    if pattern.regex.match(rel):
        return True
    parts = rel.split("/")
    for n in range(1, len(parts)):
        if pattern.regex.match("/".join(parts[:n])):
            return True
    return False


def is_excluded(patterns: list[IgnorePattern], rel: str) -> bool:
    excluded = False
    for pattern in patterns:
        if _matches(pattern, rel):
            excluded = pattern.exclude
    return excluded


def _could_reinclude_below(patterns: list[IgnorePattern], rel_dir: str) -> bool:
    """Whether an exception pattern might re-include something under `rel_dir`."""
    dir_parts = rel_dir.split("/")
    for pattern in patterns:
        if pattern.exclude:
            continue
        parts = pattern.parts
        for n, dir_part in enumerate(dir_parts):
            if n >= len(parts):
                break
            if "**" in parts[n]:
                return True
            if not re.match("^" + _glob_regex(parts[n]) + "$", dir_part):
                break
        else:
            if len(parts) > len(dir_parts):
                return True
    return False


def build_context(context: Path, patterns: list[IgnorePattern]) -> dict[str, Path]:
    """Every file and directory the engine would send: context-relative path -> host path."""
    files: dict[str, Path] = {}
    for root, dirs, names in os.walk(context):
        rel_root = os.path.relpath(root, context)
        rel_root = "" if rel_root == "." else rel_root
        kept_dirs = []
        for d in sorted(dirs):
            rel = f"{rel_root}/{d}" if rel_root else d
            full = Path(root) / d
            if full.is_symlink():
                if not is_excluded(patterns, rel):
                    files[rel] = full
                continue
            if is_excluded(patterns, rel) and not _could_reinclude_below(patterns, rel):
                continue
            if not is_excluded(patterns, rel):
                files[rel] = full
            kept_dirs.append(d)
        dirs[:] = kept_dirs
        for name in names:
            rel = f"{rel_root}/{name}" if rel_root else name
            if not is_excluded(patterns, rel):
                files[rel] = Path(root) / name
    # A directory counts as present when anything under it is.
    for rel in list(files):
        parent = os.path.dirname(rel)
        while parent and parent not in files:
            files[parent] = context / parent
            parent = os.path.dirname(parent)
    return files


# --- the build stage ---------------------------------------------------------------------


@dataclass
class StageState:
    rootfs: Path
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    shell: list[str] = field(default_factory=lambda: ["/bin/sh", "-c"])
    target_mount: str | None = None  # where the target cache is bind-mounted


def host_path(state: StageState, container_path: str) -> Path:
    clean = os.path.normpath("/" + container_path).lstrip("/")
    return state.rootfs / clean


def resolve(state: StageState, path: str) -> str:
    joined = (
        PurePosixPath(state.workdir) / path if not path.startswith("/") else PurePosixPath(path)
    )
    return os.path.normpath(str(joined))


def copy_from_context(
    ins: Instruction,
    state: StageState,
    context_files: dict[str, Path],
    dockerfile: Path,
) -> int:
    flags, rest = split_flags(ins.args)
    unknown = set(flags) - {"chown", "chmod", "link"}
    if "from" in flags:
        raise CheckFailed(
            f"{ins.where(dockerfile)}\n  COPY --from inside the build stage is not supported by this check"
        )
    if unknown:
        raise CheckFailed(f"{ins.where(dockerfile)}\n  unsupported COPY flags: {sorted(unknown)}")
    words, _ = json_or_words(rest)
    words = [expand(w, state.env) for w in words]
    if len(words) < 2:
        raise CheckFailed(f"{ins.where(dockerfile)}\n  COPY needs a source and a destination")
    sources, dest = words[:-1], words[-1]
    dest_abs = resolve(state, dest)
    dest_is_dir = dest.endswith("/") or len(sources) > 1
    copied = 0
    for source in sources:
        clean = os.path.normpath(source).lstrip("/")
        if clean.startswith(".."):
            raise CheckFailed(f"{ins.where(dockerfile)}\n  {source}: outside the build context")
        if clean == ".":
            matches = [""]
        elif any(ch in clean for ch in "*?["):
            regex = re.compile("^" + _glob_regex(clean) + "$")
            matches = sorted(rel for rel in context_files if regex.match(rel))
        else:
            matches = [clean] if clean in context_files else []
        if not matches:
            raise CheckFailed(
                f"{ins.where(dockerfile)}\n  COPY failed: {source!r} is not in the build context "
                "(missing, or excluded by .dockerignore)"
            )
        if len(matches) > 1:
            dest_is_dir = True
        for rel in matches:
            src = context_files.get(rel) if rel else None
            is_dir = rel == "" or (src is not None and src.is_dir() and not src.is_symlink())
            if is_dir:
                # A directory's contents (not the directory itself) go to dest.
                target_root = host_path(state, dest_abs)
                target_root.mkdir(parents=True, exist_ok=True)
                prefix = f"{rel}/" if rel else ""
                for sub in sorted(r for r in context_files if r.startswith(prefix) and r != rel):
                    copied += _copy_one(context_files[sub], target_root / sub[len(prefix) :])
            else:
                if dest_is_dir or host_path(state, dest_abs).is_dir():
                    target = host_path(state, dest_abs) / os.path.basename(rel)
                else:
                    target = host_path(state, dest_abs)
                assert src is not None
                copied += _copy_one(src, target)
    return copied


def _copy_one(src: Path, target: Path) -> int:
    if src.is_symlink():
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        target.symlink_to(os.readlink(src))
        return 0
    if src.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, target)
    return src.stat().st_size


@dataclass
class Sandbox:
    toolchain: Path  # the host's Rust sysroot
    toolchain_name: str
    registry: Path  # the host's $CARGO_HOME/registry
    cargo_home: Path
    target_cache: Path


def bwrap_command(state: StageState, sandbox: Sandbox, argv: list[str]) -> list[str]:
    cmd = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    cmd += ["--bind", str(state.rootfs), "/"]
    for top in ("usr", "etc"):
        cmd += ["--ro-bind", f"/{top}", f"/{top}"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / top
        if host.is_symlink():
            # A previous RUN already made it in the scratch root.
            if not (state.rootfs / top).is_symlink():
                cmd += ["--symlink", os.readlink(host), f"/{top}"]
        elif host.is_dir():
            cmd += ["--ro-bind", str(host), f"/{top}"]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run"]
    cmd += ["--dir", "/root"]
    rustup = f"/usr/local/rustup/toolchains/{sandbox.toolchain_name}"
    # The image's /usr/local holds only Rust (cargo home, rustup); the host's is hidden.
    cmd += ["--tmpfs", "/usr/local", "--dir", "/usr/local/cargo/bin"]
    cmd += ["--ro-bind", str(sandbox.toolchain), rustup]
    # The cargo registry is shared with the host, with cargo's lock files, so a cargo
    # running outside at the same time cannot race this one.
    cmd += ["--bind", str(sandbox.registry), "/usr/local/cargo/registry"]
    for lock in (".package-cache", ".package-cache-mutate", ".global-cache"):
        if (sandbox.cargo_home / lock).is_file():
            cmd += ["--bind", str(sandbox.cargo_home / lock), f"/usr/local/cargo/{lock}"]
    if state.target_mount:
        cmd += ["--bind", str(sandbox.target_cache), state.target_mount]
    cmd += ["--chdir", state.workdir, "--clearenv"]
    env = dict(state.env)
    env["PATH"] = f"{rustup}/bin:" + env.get("PATH", DEFAULT_PATH)
    env.setdefault("HOME", "/root")
    for key, value in env.items():
        cmd += ["--setenv", key, value]
    return cmd + ["--"] + argv


def run_instruction(
    ins: Instruction, state: StageState, sandbox: Sandbox, dockerfile: Path
) -> None:
    flags, rest = split_flags(ins.args)
    if flags:
        raise CheckFailed(
            f"{ins.where(dockerfile)}\n  RUN flags are not supported by this check: {sorted(flags)}"
        )
    words, exec_form = json_or_words(rest)
    argv = words if exec_form else state.shell + [rest]
    host_workdir = host_path(state, state.workdir)
    host_workdir.mkdir(parents=True, exist_ok=True)
    if state.target_mount is None:
        # The first RUN fixes where the stage's cargo target dir is cached.
        state.target_mount = os.path.normpath(state.workdir + "/target")
        host_path(state, state.target_mount).mkdir(parents=True, exist_ok=True)
    cmd = bwrap_command(state, sandbox, argv)
    started = time.monotonic()
    result = subprocess.run(cmd, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise CheckFailed(
            f"{ins.where(dockerfile)}\n  RUN failed with exit status {result.returncode} after {elapsed:.0f}s "
            "(its output is above)"
        )
    log(f"  done in {elapsed:.0f}s")


def run_stage(
    stage: Stage,
    global_args: dict[str, str],
    build_args: dict[str, str],
    context_files: dict[str, Path],
    sandbox: Sandbox,
    rootfs: Path,
    dockerfile: Path,
) -> StageState:
    state = StageState(rootfs=rootfs)
    if re.match(r"^(docker\.io/)?(library/)?rust(:|@|$)", stage.base):
        state.env.update(RUST_IMAGE_ENV)
    else:
        state.env["PATH"] = DEFAULT_PATH
    total = len(stage.body)
    for n, ins in enumerate(stage.body, 1):
        log(f"[{stage.name or stage.index} {n}/{total}] {ins.text[:110]}")
        kw = ins.keyword
        if kw == "WORKDIR":
            state.workdir = resolve(state, expand(ins.args, state.env))
            host_path(state, state.workdir).mkdir(parents=True, exist_ok=True)
        elif kw == "ENV":
            for key, value in key_values(ins.args, "ENV", ins.line):
                state.env[key] = expand(value or "", state.env)
        elif kw == "ARG":
            for key, value in key_values(ins.args, "ARG", ins.line):
                if key in build_args:
                    state.env[key] = build_args[key]
                elif value is not None:
                    state.env[key] = expand(value, state.env)
                elif key in global_args:
                    state.env[key] = global_args[key]
        elif kw == "COPY":
            size = copy_from_context(ins, state, context_files, dockerfile)
            log(f"  copied {size / 1024:.0f} KiB")
        elif kw == "RUN":
            run_instruction(ins, state, sandbox, dockerfile)
        elif kw == "SHELL":
            words, exec_form = json_or_words(ins.args)
            if not exec_form:
                raise CheckFailed(f"{ins.where(dockerfile)}\n  SHELL takes a JSON array")
            state.shell = words
        elif kw in (
            "LABEL",
            "EXPOSE",
            "ENTRYPOINT",
            "CMD",
            "STOPSIGNAL",
            "VOLUME",
            "MAINTAINER",
            "HEALTHCHECK",
        ):
            log("  (no effect on the stage's files)")
        elif kw == "USER":
            log("  (USER in the build stage is not emulated: RUN runs as the calling user)")
        else:
            raise CheckFailed(f"{ins.where(dockerfile)}\n  {kw} is not supported by this check")
    return state


def elf_summary(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        raise CheckFailed(f"{path}: not an ELF executable (starts with {head[:4]!r})")
    kind = {1: "relocatable", 2: "executable", 3: "shared object/PIE", 4: "core"}.get(
        int.from_bytes(head[16:18], "little" if head[5] == 1 else "big"), "unknown"
    )
    return f"ELF {'64' if head[4] == 2 else '32'}-bit {kind}"


def highest_glibc(path: Path) -> str | None:
    """The newest GLIBC_x.y symbol version the binary asks for (a text scan)."""
    data = path.read_bytes()
    versions = {
        tuple(int(p) for p in m.split(b"."))
        for m in re.findall(rb"GLIBC_(\d+\.\d+(?:\.\d+)?)\x00", data)
    }
    if not versions:
        return None
    return ".".join(str(p) for p in max(versions))


def stage_file(state: StageState, sandbox: Sandbox, container_path: str) -> Path:
    """Where a file of the finished stage is on the host (the target cache included)."""
    clean = os.path.normpath("/" + container_path)
    mount = state.target_mount
    if mount and (clean == mount or clean.startswith(mount + "/")):
        return sandbox.target_cache / os.path.relpath(clean, mount)
    return host_path(state, clean)


# The shared libraries of gcr.io/distroless/cc-debian12: glibc (libc6) and the GCC runtime
# (libgcc-s1, libgomp1, libstdc++6). The smoke run below sees these and nothing else.
DISTROLESS_CC_LIBS = (
    "ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libmvec.so.1 libdl.so.2 libpthread.so.0 "
    "librt.so.1 libresolv.so.2 libutil.so.1 libanl.so.1 libnss_dns.so.2 libnss_files.so.2 "
    "libgcc_s.so.1 libgomp.so.1 libstdc++.so.6"
).split()


def smoke_run(binary: Path, final: Stage, args: list[str], where: str) -> str:
    """Runs `binary ARGS` as the final stage would start it, on a distroless cc base: an
    empty root with only the base's shared libraries, as user 65532. A binary linked to
    a library distroless does not ship (libssl, say) fails here."""
    if not re.search(r"distroless/cc", final.base):
        return f"smoke run skipped: the final stage is FROM {final.base}, not distroless/cc"
    libc = next(
        (
            d
            for d in (Path("/lib/x86_64-linux-gnu"), Path("/usr/lib/x86_64-linux-gnu"))
            if (d / "libc.so.6").exists()
        ),
        None,
    )
    if libc is None:
        return "smoke run skipped: no x86_64 glibc on this host"
    cmd = ["bwrap", "--die-with-parent", "--unshare-all", "--uid", "65532", "--gid", "65532"]
    cmd += [
        "--dir",
        str(libc),
        "--dir",
        "/lib64",
        "--dir",
        "/tmp",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ]
    for name in DISTROLESS_CC_LIBS:
        lib = libc / name
        if lib.exists():
            cmd += ["--ro-bind", str(lib.resolve()), str(lib)]
    cmd += ["--symlink", str(libc / "ld-linux-x86-64.so.2"), "/lib64/ld-linux-x86-64.so.2"]
    cmd += ["--ro-bind", str(binary), "/entrypoint", "--clearenv", "--setenv", "PATH", DEFAULT_PATH]
    cmd += ["--", "/entrypoint", *args]
    try:
        result = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired as e:
        raise CheckFailed(f"{where}\n  smoke run `{' '.join(args)}` did not finish in 60 s") from e
    if result.returncode != 0:
        raise CheckFailed(
            f"{where}\n  smoke run `{binary.name} {' '.join(args)}` on distroless' libraries only, as "
            f"user 65532, exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    first = (result.stdout.strip().splitlines() or [""])[0]
    return f"smoke run `{' '.join(args)}` as 65532 on distroless' libraries: {first!r}"


def check_final_stage(
    stages: list[Stage],
    builder: Stage,
    state: StageState,
    sandbox: Sandbox,
    dockerfile: Path,
    smoke_args: list[str],
) -> list[str]:
    """Every `COPY --from=<builder>` source of the final stage exists; the one that becomes
    the ENTRYPOINT (or every file, without an ENTRYPOINT) is an executable ELF file."""
    final = stages[-1]
    entrypoint = None
    for ins in final.body:
        if ins.keyword == "ENTRYPOINT":
            words, exec_form = json_or_words(ins.args)
            entrypoint = words[0] if exec_form and words else None
    outputs = []
    user = None
    for ins in final.body:
        if ins.keyword == "USER":
            user = ins.args.split(":")[0].strip()
        if ins.keyword != "COPY":
            continue
        flags, rest = split_flags(ins.args)
        source_stage = flags.get("from")
        if source_stage is None or find_stage(stages, source_stage) is not builder:
            continue
        words, _ = json_or_words(rest)
        sources, dest = words[:-1], words[-1]
        for source in sources:
            path = stage_file(state, sandbox, source)
            if not path.exists():
                raise CheckFailed(
                    f"{ins.where(dockerfile)}\n  COPY --from={source_stage}: {source} does not exist "
                    "after the build stage"
                )
            if not path.is_file():
                outputs.append(f"{source}: a directory")
                continue
            size = path.stat().st_size
            lands_at = dest + os.path.basename(source) if dest.endswith("/") else dest
            must_run = entrypoint is None or os.path.normpath(lands_at) == os.path.normpath(
                entrypoint
            )
            if must_run and not os.access(path, os.X_OK):
                raise CheckFailed(f"{ins.where(dockerfile)}\n  {source} is not executable")
            if must_run or path.read_bytes()[:4] == b"\x7fELF":
                try:
                    summary = elf_summary(path)
                except CheckFailed as e:
                    raise CheckFailed(f"{ins.where(dockerfile)}\n  {e}") from e
                glibc = highest_glibc(path)
                summary += f", needs glibc >= {glibc}" if glibc else ""
            else:
                summary = "a file"
            outputs.append(f"{source}: {summary}, {size} bytes ({size / 1e6:.1f} MB)")
            if must_run and smoke_args:
                outputs.append(
                    f"{source}: " + smoke_run(path, final, smoke_args, ins.where(dockerfile))
                )
    if not outputs:
        raise CheckFailed(
            f"{final.instruction.where(dockerfile)}\n  the final stage copies nothing from {builder.name or builder.index}"
        )
    if final is not builder and user in (None, "", "0", "root"):
        raise CheckFailed(
            f"{final.instruction.where(dockerfile)}\n  the final stage runs as root (no USER, or USER root)"
        )
    return outputs


def scrub_final_outputs(target_cache: Path) -> int:
    """Removes the binaries and libraries cargo copied to the top of each profile directory
    (target/<profile>/, beside .fingerprint/) in the cache. A real build starts without
    them; a stale one (another profile's, a renamed binary's) must not make a broken
    `cp target/...` pass. Cargo puts them back from deps/ when they are up to date."""
    removed = 0
    fingerprints = [*target_cache.glob("*/.fingerprint"), *target_cache.glob("*/*/.fingerprint")]
    for fingerprint in fingerprints:
        profile_dir = fingerprint.parent
        for entry in profile_dir.iterdir():
            # Not .cargo-lock: a concurrent check may hold it.
            if entry.name.startswith("."):
                continue
            if entry.is_file() or entry.is_symlink():
                entry.unlink()
                removed += 1
    return removed


# --- main --------------------------------------------------------------------------------


def host_toolchain() -> tuple[Path, str]:
    rustc = shutil.which("rustc")
    if rustc is None:
        raise SetupError("rustc is not on PATH: install Rust (https://rustup.rs)")
    try:
        sysroot = subprocess.run(
            [rustc, "--print", "sysroot"], check=True, capture_output=True, text=True
        ).stdout.strip()
        version = subprocess.run(
            [rustc, "--version"], check=True, capture_output=True, text=True
        ).stdout.strip()
    except (subprocess.CalledProcessError, OSError) as e:
        raise SetupError(f"cannot ask rustc for its sysroot: {e}") from e
    if not (Path(sysroot) / "bin" / "cargo").exists():
        raise SetupError(f"no cargo in the toolchain {sysroot}")
    return Path(sysroot), version


def check_rust_version(base: str, host_version: str) -> None:
    m = re.match(r"^(?:docker\.io/)?(?:library/)?rust:(\d+)\.(\d+)(?:\.(\d+))?", base)
    if not m:
        return
    host = re.match(r"^rustc (\d+)\.(\d+)\.(\d+)", host_version)
    if not host:
        raise SetupError(f"cannot read the host's rustc version: {host_version!r}")
    wanted = [g for g in m.groups() if g is not None]
    if list(host.groups()[: len(wanted)]) != wanted:
        raise SetupError(
            f"the build stage is FROM {base} but the host has {host_version}: "
            f"install Rust {'.'.join(wanted)} (rustup toolchain install {'.'.join(wanted)}) "
            "so the check builds with the image's compiler"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Run a Dockerfile's build stage in a sandbox, without a Docker engine."
    )
    parser.add_argument(
        "--file", "-f", default="Dockerfile", help="the Dockerfile (default: ./Dockerfile)"
    )
    parser.add_argument("--context", default=".", help="the build context (default: .)")
    parser.add_argument(
        "--stage",
        help="the stage to run (default: the stage the final stage copies from)",
    )
    parser.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--smoke",
        default="",
        metavar="ARGS",
        help="run the ENTRYPOINT binary with ARGS (e.g. --smoke=--version) in an empty root "
        "holding only distroless cc's libraries, as user 65532; it must exit 0",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--cache-dir", default=str(CACHE_DIR), help=f"the persistent cache (default: {CACHE_DIR})"
    )
    args = parser.parse_args()

    dockerfile = Path(args.file)
    context = Path(args.context).resolve()
    try:
        text = dockerfile.read_text(encoding="utf-8")
    except OSError as e:
        raise SetupError(f"cannot read {dockerfile}: {e}") from e
    if not context.is_dir():
        raise SetupError(f"the build context {context} is not a directory")
    if shutil.which("bwrap") is None:
        raise SetupError(
            "bwrap is missing: install the Debian package bubblewrap (scripts/install-deps.sh)"
        )

    instructions, _ = parse_dockerfile(text)
    preamble, stages = split_stages(instructions)
    final = stages[-1]
    if args.stage:
        builder = find_stage(stages, args.stage)
        if builder is None:
            raise SetupError(f"no stage {args.stage!r} in {dockerfile}")
    else:
        refs = []
        for ins in final.body:
            if ins.keyword == "COPY":
                flags, _ = split_flags(ins.args)
                if "from" in flags:
                    refs.append(flags["from"])
        found = [s for s in (find_stage(stages, r) for r in refs) if s is not None]
        if not found:
            raise SetupError(
                f"the final stage of {dockerfile} copies from no earlier stage: pass --stage"
            )
        builder = found[0]

    build_args = {}
    for item in args.build_arg:
        key, eq, value = item.partition("=")
        if not eq:
            raise SetupError(f"--build-arg {item!r}: expected KEY=VALUE")
        build_args[key] = value
    global_args: dict[str, str] = {}
    for ins in preamble:
        for key, value in key_values(ins.args, "ARG", ins.line):
            global_args[key] = build_args.get(key, value or "")
    base = expand(builder.base, global_args)

    sysroot, version = host_toolchain()
    check_rust_version(base, version)
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    registry = cargo_home / "registry"
    registry.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache_dir)
    target_cache = cache / "target"
    target_cache.mkdir(parents=True, exist_ok=True)
    scrub_final_outputs(target_cache)
    sandbox = Sandbox(
        toolchain=sysroot,
        toolchain_name=sysroot.name,
        registry=registry,
        cargo_home=cargo_home,
        target_cache=target_cache,
    )

    ignore_file = Path(str(dockerfile) + ".dockerignore")
    if not ignore_file.exists():
        ignore_file = context / ".dockerignore"
    patterns = read_dockerignore(ignore_file)
    context_files = build_context(context, patterns)
    context_bytes = sum(
        p.stat().st_size for p in context_files.values() if p.is_file() and not p.is_symlink()
    )
    n_files = sum(1 for p in context_files.values() if p.is_file())
    log(
        f"{dockerfile}: stage {builder.name or builder.index} (FROM {base}) with {version}; "
        f"build context {n_files} files, {context_bytes / 1024:.0f} KiB "
        f"({ignore_file if ignore_file.exists() else 'no .dockerignore'})"
    )

    started = time.monotonic()
    rootfs = Path(tempfile.mkdtemp(prefix="check-dockerfile-"))
    try:
        state = run_stage(
            builder, global_args, build_args, context_files, sandbox, rootfs, dockerfile
        )
        outputs = check_final_stage(
            stages, builder, state, sandbox, dockerfile, shlex.split(args.smoke)
        )
    finally:
        if args.keep:
            log(f"scratch directory kept: {rootfs}")
        else:
            shutil.rmtree(rootfs, ignore_errors=True)
    for line in outputs:
        log(f"output {line}")
    log(
        f"OK: stage {builder.name or builder.index} of {dockerfile} builds ({time.monotonic() - started:.0f}s)"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckFailed as e:
        print(f"{PROG}: FAILED at {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except SetupError as e:
        print(f"{PROG}: cannot run the check: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
