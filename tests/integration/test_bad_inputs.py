"""Issue 16's acceptance: every command that reads data, on every applicable file of the bad-input
corpus (tests/fixtures/bad_inputs/, written by scripts/make_bad_inputs.py; manifest.json says which
commands must reject each file and with what error), exits 1 with an error line naming the file (and
the line and field where there is one), lets no exception (a Python traceback) escape, and creates
or changes no file. The path cases (`invocations`: an output that is an input or another output, an
output folder that cannot be written) are held to the same standard.

Commands run in-process through `preftune.cli.main`, the console script's entry point, so an
exception escaping it is exactly a traceback for the user; a few cases also run as real processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest

from preftune.cli import main

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "fixtures" / "bad_inputs"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
TRACEBACK = "Traceback (most recent call last)"
PROGRESS_BAR = re.compile(r"\|\s*\d+/\d+ \[")  # a tqdm bar: "| 21/21 ["

# Tiny models and the smallest settings: every case must fail on its input, before any real work.
TRAIN = ["max_steps=1", "batch_size=2", "report_to=none", "save_every=-1"]
GEN = ["--max-new-tokens", "2"]


def command_argv(cmd: str, data: str, out: str) -> list[str]:
    """The argument list of one command reading `data`, writing only under `out` (not created)."""
    return {
        "data check": ["data", "check", data],
        "data convert": ["data", "convert", data, "-o", f"{out}/converted.jsonl"],
        "data curate": ["data", "curate", data, "-o", f"{out}/curated.jsonl"],
        "data split": ["data", "split", data, "--test-frac", "0.5", "-o", f"{out}/split"],
        "data stats": ["data", "stats", data],
        "score": ["score", "tiny-bert", "--data", data, "-o", f"{out}/scored.jsonl"],
        # train rm / score / eval rm keep the default max_length (1024): issue 16 item 4 is about it
        "train rm": ["train", "rm", "--model", "tiny-bert", "--data", data, "--out", f"{out}/rm", *TRAIN],
        "train sft": ["train", "sft", "--model", "tiny-llama", "--data", data, "--out", f"{out}/sft", *TRAIN,
                      "max_length=64"],
        "train dpo": ["train", "dpo", "--model", "tiny-llama", "--data", data, "--out", f"{out}/dpo", *TRAIN,
                      "max_length=64"],
        "eval rm": ["eval", "rm", "tiny-bert", "--data", data, "--json", f"{out}/rm.json"],
        "eval policy": ["eval", "policy", "tiny-llama", "--prompts", data, "--baseline", "tiny-llama", "--json",
                        f"{out}/policy.json", *GEN],
        "eval regress": ["eval", "regress", "tiny-llama", "--suite", data, "--baseline", "tiny-llama", "--json",
                         f"{out}/regress.json", *GEN],
        "bon": ["bon", "tiny-llama", "--prompts", data, "--scorer", "gold", "--n", "1,2", "-o", f"{out}/bon.json",
                *GEN],
        "sample-pairs": ["sample-pairs", "tiny-llama", "--prompts", data, "--scorer", "gold", "-o",
                         f"{out}/pairs.jsonl", "--num-samples", "2", *GEN],
    }[cmd]


def snapshot(root: Path) -> dict:
    """Every path under root with what it is: links, folders, files by size, mtime and content."""
    snap: dict[str, tuple] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            snap[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            snap[rel] = ("dir",)
        else:
            st = p.stat()
            snap[rel] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return snap


def run_cli(capsys, argv: list[str]) -> tuple[int | None, str, str, str | None]:
    """(exit code, stdout, stderr, the traceback of an exception that escaped main, or None)."""
    try:
        code: int | None = main(argv)
        escaped = None
    except SystemExit as e:  # argparse
        code, escaped = (e.code if isinstance(e.code, int) else 1), None
    except Exception as e:  # noqa: BLE001 (an exception escaping main() is what the user sees as a traceback)
        code, escaped = None, "".join(traceback.format_exception(e))
    out, err = capsys.readouterr()
    return code, out, err, escaped


def error_line(text: str, path: str, spec: dict) -> str | None:
    """The first output line naming `path` (as `PATH:LINE: FIELD: ...` when the spec has a line and
    field) whose message matches the spec's fragment (a regular expression)."""
    for ln in text.splitlines():
        if spec["line"] is not None:
            head = f"{path}:{spec['line']}: " + (f"{spec['field']}: " if spec["field"] else "")
            if head in ln and re.search(spec["fragment"], ln.split(head, 1)[1]):
                return ln
        elif path in ln and re.search(spec["fragment"], ln):
            return ln
    return None


def _check_refusal(code, out, err, escaped, path: str, spec: dict, before: dict, after: dict) -> None:
    assert escaped is None, f"an exception escaped main():\n{escaped}"
    assert TRACEBACK not in err
    assert code == 1, f"exit {code}, expected 1\nstdout:\n{out}\nstderr:\n{err}"
    found = error_line(out + err, path, spec)
    assert found, f"no error line naming {path} with {spec}\nstdout:\n{out}\nstderr:\n{err}"
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}"


FILE_CASES = [(cmd, name) for name, entry in MANIFEST["files"].items() for cmd in entry["rejected_by"]]


@pytest.mark.parametrize(("cmd", "name"), FILE_CASES, ids=[f"{c.replace(' ', '-')}:{n}" for c, n in FILE_CASES])
def test_every_reader_rejects_every_bad_file(cmd, name, tmp_path, capsys):
    entry = MANIFEST["files"][name]
    data = tmp_path / name
    shutil.copyfile(CORPUS / name, data)
    before = snapshot(tmp_path)
    code, out, err, escaped = run_cli(capsys, command_argv(cmd, str(data), str(tmp_path / "out")))
    if entry.get("expect") == "clamp_or_error":
        # clamp max_length to the model's 512 positions and say so (exit 0), or refuse before any work
        assert escaped is None, f"an exception escaped main():\n{escaped}"
        assert TRACEBACK not in err
        assert code in (0, 1) and re.search(entry["error"]["fragment"], out + err), (code, out, err)
        if code == 1:
            assert snapshot(tmp_path) == before
        return
    _check_refusal(code, out, err, escaped, str(data), entry["error"], before, snapshot(tmp_path))
    if entry.get("must_not_say"):
        assert entry["must_not_say"] not in out + err


# ---------------------------------------------------------------- path cases

GOOD_ROWS = [{"prompt": f"Name thing {i}.", "chosen": f"Thing {i}.", "rejected": "No."} for i in range(4)]
SUITE_ROW = {"id": "a", "prompt": "Say hi.", "checks": [{"max_words": 5}]}


def _writable(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _make_readonly(folder: Path, undo: list) -> None:
    """A folder nobody can add a file to: mode 555, and for root (whom modes do not stop) the immutable
    attribute. Skips the case when neither holds here (root without CAP_LINUX_IMMUTABLE)."""
    folder.mkdir()
    folder.chmod(0o555)
    undo.append(lambda: folder.chmod(0o755))
    if (_writable(folder) and shutil.which("chattr")
            and subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False).returncode == 0):
        undo.insert(0, lambda: subprocess.run(["chattr", "-i", str(folder)], check=False))
    if _writable(folder):
        pytest.skip(f"cannot make {folder} read-only on this machine (root, and chattr +i refused)")


def _setup(tmp: Path, steps: list, undo: list) -> None:
    for step in steps:
        verb, *args = step
        if verb == "symlink":
            (tmp / args[0]).symlink_to(tmp / args[1])
        elif verb == "hardlink":
            os.link(tmp / args[1], tmp / args[0])
        elif verb == "copy":
            (tmp / args[0]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp / args[1], tmp / args[0])
        elif verb == "readonly_dir":
            _make_readonly(tmp / args[0], undo)
        else:
            raise AssertionError(f"unknown setup step {verb!r} in the manifest")


INVOCATIONS = MANIFEST["invocations"]


@pytest.mark.parametrize("case", INVOCATIONS, ids=[c["name"] for c in INVOCATIONS])
def test_outputs_that_collide_or_cannot_be_written_are_refused_before_any_work(case, tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in GOOD_ROWS))
    good_csv = tmp_path / "good.csv"
    good_csv.write_text("prompt,chosen,rejected\n" + "".join(f"{r['prompt']},{r['chosen']},No.\n" for r in GOOD_ROWS))
    suite = tmp_path / "suite.jsonl"
    suite.write_text(json.dumps(SUITE_ROW) + "\n")
    undo: list = []
    try:
        _setup(tmp_path, case["setup"], undo)
        argv = [a.format(tmp=tmp_path, good=good, good_csv=good_csv, suite=suite) for a in case["argv"]]
        before = snapshot(tmp_path)
        code, out, err, escaped = run_cli(capsys, argv)
        spec = {"line": None, "field": None, "fragment": case["fragment"]}
        # the error names a path of the case (tmp_path appears in every one of them)
        _check_refusal(code, out, err, escaped, str(tmp_path), spec, before, snapshot(tmp_path))
        # before any work: nothing reported, no progress bar (loading weights, generating, scoring)
        assert out.strip() == "" and not PROGRESS_BAR.search(err), f"work before the refusal:\n{out}\n{err}"
    finally:
        for fn in undo:
            fn()


# ---------------------------------------------------------------- the real entry point

@pytest.mark.parametrize(("cmd", "name"), [("data check", "truncated.jsonl.gz"), ("data stats", "latin1.jsonl"),
                                           ("data convert", "not_gzip.jsonl.gz"), ("score", "row_int.jsonl")])
def test_real_process_prints_one_error_line_and_no_traceback(cmd, name, tmp_path):
    data = tmp_path / name
    shutil.copyfile(CORPUS / name, data)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "preftune", *command_argv(cmd, str(data), str(tmp_path / "out"))],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 1 and TRACEBACK not in proc.stderr
    assert error_line(proc.stdout + proc.stderr, str(data), MANIFEST["files"][name]["error"])
    assert not (tmp_path / "out").exists()


def test_the_corpus_is_what_the_script_writes():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "make_bad_inputs.py"), "--check"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
