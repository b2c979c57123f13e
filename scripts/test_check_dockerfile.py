#!/usr/bin/env python3
"""Unit tests of scripts/check-dockerfile.py's parsing (no sandbox, no cargo; < 1 s):

python3 scripts/test_check_dockerfile.py
"""

import importlib.util
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.dont_write_bytecode = True  # no __pycache__ in scripts/
_spec = importlib.util.spec_from_file_location("check_dockerfile", HERE / "check-dockerfile.py")
assert _spec is not None and _spec.loader is not None
cd = importlib.util.module_from_spec(_spec)
sys.modules["check_dockerfile"] = cd
_spec.loader.exec_module(cd)


def patterns(text: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ".dockerignore"
        path.write_text(text)
        return cd.read_dockerignore(path)


class DockerignoreTest(unittest.TestCase):
    def test_allow_list(self):
        p = patterns("*\n!Cargo.toml\n!src\n!bench/Cargo.toml\n")
        included = ["Cargo.toml", "src", "src/main.rs", "src/a/b.rs", "bench/Cargo.toml"]
        excluded = ["README.md", "target", "target/release/x", "bench/src/main.rs", ".git/HEAD"]
        for rel in included:
            self.assertFalse(cd.is_excluded(p, rel), rel)
        for rel in excluded:
            self.assertTrue(cd.is_excluded(p, rel), rel)

    def test_last_match_wins_and_double_star(self):
        p = patterns("**/*.log\n!keep.log\ntarget\n")
        self.assertTrue(cd.is_excluded(p, "a/b/c.log"))
        self.assertTrue(cd.is_excluded(p, "c.log"))
        self.assertFalse(cd.is_excluded(p, "keep.log"))
        self.assertTrue(cd.is_excluded(p, "target/debug/x"))
        self.assertFalse(cd.is_excluded(p, "src/target.rs"))

    def test_the_repositorys_context_is_only_what_the_dockerfile_copies(self):
        repo = HERE.parent
        files = cd.build_context(repo, cd.read_dockerignore(repo / ".dockerignore"))
        tops = {rel.split("/")[0] for rel in files}
        self.assertEqual(tops, {"Cargo.toml", "Cargo.lock", "src", "testenv", "bench"})
        self.assertEqual(
            {rel for rel in files if rel.startswith(("testenv/", "bench/"))},
            {"testenv/Cargo.toml", "bench/Cargo.toml"},
        )


class CopyTest(unittest.TestCase):
    """COPY as the engine does it: a directory's contents, files into a `/` destination,
    globs, and a source the .dockerignore leaves out is an error naming the line."""

    def copy(self, args: str, ignore: str = ""):
        with tempfile.TemporaryDirectory() as tmp:
            context = Path(tmp) / "ctx"
            for rel in ["Cargo.toml", "src/main.rs", "src/a/b.rs", "docs/x.md"]:
                (context / rel).parent.mkdir(parents=True, exist_ok=True)
                (context / rel).write_text(rel)
            (context / ".dockerignore").write_text(ignore)
            files = cd.build_context(context, cd.read_dockerignore(context / ".dockerignore"))
            rootfs = Path(tmp) / "root"
            rootfs.mkdir()
            state = cd.StageState(rootfs=rootfs, workdir="/w")
            ins = cd.Instruction(7, "COPY", args, f"COPY {args}")
            cd.copy_from_context(ins, state, files, Path("Dockerfile"))
            return sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*") if p.is_file())

    def test_directory_contents_and_destinations(self):
        self.assertEqual(self.copy("src src"), ["w/src/a/b.rs", "w/src/main.rs"])
        self.assertEqual(self.copy("Cargo.toml ./"), ["w/Cargo.toml"])
        self.assertEqual(self.copy("Cargo.toml /etc/c.toml"), ["etc/c.toml"])
        self.assertEqual(
            self.copy("*.toml src/main.rs out/"), ["w/out/Cargo.toml", "w/out/main.rs"]
        )
        self.assertEqual(
            self.copy(". ."),
            ["w/.dockerignore", "w/Cargo.toml", "w/docs/x.md", "w/src/a/b.rs", "w/src/main.rs"],
        )

    def test_an_ignored_source_fails_naming_the_line(self):
        with self.assertRaises(cd.CheckFailed) as failed:
            self.copy("docs/x.md docs/", ignore="*\n!src\n")
        self.assertIn("Dockerfile:7: COPY docs/x.md docs/", str(failed.exception))
        self.assertIn("excluded by .dockerignore", str(failed.exception))


class DockerfileTest(unittest.TestCase):
    def test_continuations_comments_and_stages(self):
        text = (
            "# syntax=docker/dockerfile:1\n"
            "ARG V=1.95\n"
            "FROM rust:${V} AS builder\n"
            "RUN a \\\n"
            "    # a comment inside\n"
            "    && b\n"
            "FROM scratch\n"
            "COPY --from=builder /x /x\n"
        )
        instructions, _ = cd.parse_dockerfile(text)
        preamble, stages = cd.split_stages(instructions)
        self.assertEqual([i.keyword for i in preamble], ["ARG"])
        self.assertEqual([s.name for s in stages], ["builder", None])
        run = stages[0].body[0]
        self.assertEqual((run.keyword, run.line), ("RUN", 4))
        self.assertEqual(" ".join(run.args.split()), "a && b")
        self.assertEqual(cd.expand(stages[0].base, {"V": "1.95"}), "rust:1.95")

    def test_expand(self):
        env = {"A": "a", "E": ""}
        self.assertEqual(cd.expand("$A/${A}/${B:-d}/${A:+s}/${E:+s}/\\$A", env), "a/a/d/s//$A")

    def test_env_forms(self):
        self.assertEqual(cd.key_values('a=1 b="x y"', "ENV", 1), [("a", "1"), ("b", "x y")])
        self.assertEqual(cd.key_values("a 1 2", "ENV", 1), [("a", "1 2")])
        self.assertEqual(cd.key_values("a", "ARG", 1), [("a", None)])


if __name__ == "__main__":
    unittest.main()
