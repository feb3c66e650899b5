"""Hostile code against the code sandbox, the way a user meets it: a YAML code suite, a model
(a scripted OpenAI-compatible server here) answering with the hostile program, and
`punie eval ... --base-url` writing results and a report. Each probe is one case of one suite,
run once per module; each test reads its case.

A scripted server is the one stand-in: a real model does not write these programs on demand.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from openai_stub import completion, scripted_server
from punie.errors import PunieError
from punie.eval.sandbox import Limits, isolation, protections, remove_tree, run_python
from punie.eval.suite import Suite
from punie.platform import (
    Host,
    _ps_tree_rss,
    rss_of_tree,
    sandbox_rlimits,
    sandbox_strategies,
    sandbox_uid,
    unix_socket_filter,
)

MAC = Host("darwin", "arm64", "14.5")
LINUX = Host("linux", "x86_64", "6.8.0")
RUN_ID = uuid.uuid4().hex[:12]
SECRET = f"SECRET-{RUN_ID}"
MARKER = f"punie-host-process-{RUN_ID}"
HOST_TMP = [f"/tmp/punie-probe-{RUN_ID}", f"/var/tmp/punie-probe-{RUN_ID}"]
if Path("/dev/shm").is_dir():
    HOST_TMP.append(f"/dev/shm/punie-probe-{RUN_ID}")
WRONG_ADD = "def add(a, b):\n    return a - b\n"
REPLACE_OUTPUT = "import os\nfor n in ('.out', '.err'):\n    if os.path.lexists(n):\n"
REPLACE_OUTPUT += "        os.unlink(n)\n"


def _probes(secret_file: Path, sock_path: Path, abstract: str) -> dict[str, tuple[str, str]]:
    """Case id -> (the model's answer, the case's tests)."""
    return {
        # The old sandbox read .err back by name: a symlink there leaked root-only files.
        "symlink": (
            REPLACE_OUTPUT + f"os.symlink({str(secret_file)!r}, '.err')\n"
            "os.symlink('/etc/shadow', '.out')\nraise SystemExit(1)\n",
            "pass",
        ),
        # Output closed, still running: the wall limit must still hold.
        "linger": ("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(60)\n", "pass"),
        # A folder its owner cannot enter, and a deep one: the temp folder still goes.
        "unremovable": (
            "import os\nos.makedirs('a/b/c')\nopen('a/b/c/f', 'w').write('x')\n"
            "os.chmod('a/b', 0)\nos.chmod('a', 0)\n",
            "pass",
        ),
        "flood": (
            "import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 100_000)\n",
            "pass",
        ),
        "early-os-exit": (WRONG_ADD + "import os\nos._exit(0)\n", "assert add(1, 2) == 3"),
        "early-sys-exit": (WRONG_ADD + "import sys\nsys.exit(0)\n", "assert add(1, 2) == 3"),
        "early-systemexit": (WRONG_ADD + "raise SystemExit\n", "assert add(1, 2) == 3"),
        "early-kill": (
            WRONG_ADD + "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
            "assert add(1, 2) == 3",
        ),
        "early-close-token": (
            WRONG_ADD + "import os\nfor fd in range(3, 256):\n"
            "    try:\n        os.close(fd)\n    except OSError:\n        pass\nos._exit(0)\n",
            "assert add(1, 2) == 3",
        ),
        "honest": ("def add(a, b):\n    return a + b\n", "assert add(1, 2) == 3"),
        "tmp-write": (
            "".join(f"open({p!r}, 'w').write('left behind')\n" for p in HOST_TMP),
            "pass",
        ),
        "unix-socket": (
            "import socket\nreached = []\n"
            f"for address in ({str(sock_path)!r}, {abstract!r}):\n"
            "    try:\n        socket.socket(socket.AF_UNIX).connect(address)\n"
            "        reached.append(address)\n"
            "    except OSError as e:\n        print(address, e)\n",
            "assert not reached, reached",
        ),
        "proc": (
            "import os\nseen = []\n"
            "for pid in (p for p in os.listdir('/proc') if p.isdigit()):\n"
            "    try:\n"
            f"        if {MARKER!r}.encode() in open(f'/proc/{{pid}}/cmdline', 'rb').read():\n"
            "            seen.append(pid)\n"
            "    except OSError:\n        pass\n",
            "assert not seen, f'host processes visible: {seen}'",
        ),
        "disk-cap": (
            "for i in range(4):\n    open(f'/tmp/fill-{i}', 'wb').write(b'x' * 3_000_000)\n",
            "pass",
        ),
    }


def _scripted_server(answers: dict[str, str]) -> ThreadingHTTPServer:
    def answer(body):
        content = f"```python\n{answers[body['messages'][-1]['content']]}```"
        return completion(body["model"], {"content": content}, completion_tokens=30)

    return scripted_server(answer)


def _suite_yaml(probes: dict[str, tuple[str, str]]) -> str:
    lines = [
        "name: hostile",
        "kind: code",
        "limits: {wall_s: 4, cpu_s: 3, memory_mb: 256, file_mb: 4, disk_mb: 8, output_bytes: 2000}",
        "cases:",
    ]
    for case_id, (_, tests) in probes.items():
        lines += [f"  - id: {case_id}", f"    prompt: {case_id}", "    expect:"]
        lines += ["      tests: |", *(f"        {t}" for t in tests.splitlines())]
    return "\n".join(lines) + "\n"


@pytest.fixture
def tmpdir_for_sandbox():
    """A TMPDIR of the test's own, world-traversable as /tmp is, so leftovers are ours to count."""
    tmpdir = Path(tempfile.mkdtemp(prefix="punie-hostile-tmp-", dir="/tmp"))
    tmpdir.chmod(0o755)
    yield tmpdir
    shutil.rmtree(tmpdir, ignore_errors=True)


def _eval(probes: dict[str, tuple[str, str]], root: Path, tmpdir: Path, timeout: float) -> dict:
    """`punie eval` of a suite of `probes` against a server that answers each with its code."""
    httpd = _scripted_server({k: v[0] for k, v in probes.items()})
    suite = root / "hostile.yaml"
    suite.write_text(_suite_yaml(probes))
    run_dir = root / "run"
    start = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", "from punie.cli import main; main()", "eval", str(suite)]
            + ["--model", "scripted", "--base-url", f"http://127.0.0.1:{httpd.server_port}"]
            + ["--run-dir", str(run_dir), "--no-cache", "--concurrency", "4", "--json"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "TMPDIR": str(tmpdir)},
        )
    finally:
        httpd.shutdown()
    assert done.returncode == 0, done.stderr
    results_file = run_dir / "hostile.scripted.json"  # labelled by the model id
    return {
        "results": json.loads(results_file.read_text()),
        "results_text": results_file.read_text(),
        "report": (run_dir / "report.html").read_text(),
        "cases": {c["id"]: c for c in json.loads(results_file.read_text())["cases"]},
        "wall_s": time.monotonic() - start,
        "leftovers": sorted(p.name for p in tmpdir.iterdir()),
    }


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Run the hostile suite once; yield its results and report, and what the host saw."""
    root = tmp_path_factory.mktemp("hostile")
    secret_file = root / "secret.txt"
    secret_file.write_text(f"{SECRET}\n")
    secret_file.chmod(0o600)
    # A world-writable Unix socket in a world-writable folder: only the sandbox keeps code out.
    sock_dir = Path(tempfile.mkdtemp(prefix="punie-sock-", dir="/tmp"))
    sock_dir.chmod(0o777)
    sock_path = sock_dir / "s.sock"
    servers = [socket.socket(socket.AF_UNIX)]
    servers[0].bind(str(sock_path))
    sock_path.chmod(0o777)
    abstract = f"\0punie-probe-{RUN_ID}" if sys.platform.startswith("linux") else str(sock_path)
    if abstract.startswith("\0"):
        servers.append(socket.socket(socket.AF_UNIX))
        servers[1].bind(abstract)
    for srv in servers:
        srv.listen()
        srv.setblocking(False)
    # A host process with a marker in its command line, for the /proc probe to look for.
    host_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", MARKER])
    tmpdir = Path(tempfile.mkdtemp(prefix="punie-hostile-tmp-", dir="/tmp"))
    tmpdir.chmod(0o755)
    try:
        got = _eval(_probes(secret_file, sock_path, abstract), root, tmpdir, timeout=120)
        got["accepted"] = []
        for srv in servers:
            with contextlib.suppress(BlockingIOError):
                got["accepted"].append(srv.accept())
        got["host_tmp"] = [p for p in HOST_TMP if os.path.lexists(p)]
        yield got
    finally:
        host_proc.kill()
        host_proc.wait()
        for srv in servers:
            srv.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
        shutil.rmtree(tmpdir, ignore_errors=True)
        for p in HOST_TMP:  # only on a sandbox that failed its probe
            if os.path.lexists(p):
                os.unlink(p)


def test_symlinked_output_files_leak_nothing(hostile):
    case = hostile["cases"]["symlink"]
    assert not case["passed"]
    for text in (case["reason"], hostile["results_text"], hostile["report"]):
        assert SECRET not in text
        assert "root:" not in text  # /etc/shadow's first line


def test_a_fifo_for_output_neither_hangs_nor_leaves_the_folder(tmp_path, tmpdir_for_sandbox):
    # The old sandbox opened .out by name after the run: a FIFO there blocked it for good.
    fifo = (REPLACE_OUTPUT + "os.mkfifo('.out')\nos.mkfifo('.err')\n", "pass")
    try:
        got = _eval({"fifo": fifo}, tmp_path, tmpdir_for_sandbox, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("punie eval hung on a FIFO left where output used to be read back")
    assert got["cases"]["fifo"]["passed"], got["cases"]["fifo"]["reason"]
    assert got["leftovers"] == []


def test_closing_output_and_running_on_meets_the_wall_limit(hostile):
    case = hostile["cases"]["linger"]
    assert (case["passed"], case["label"]) == (False, "timeout")
    assert hostile["wall_s"] < 60  # every case ran well within its limits, nothing hung


def test_folders_made_unreadable_are_still_removed(hostile):
    assert hostile["cases"]["unremovable"]["passed"]
    assert hostile["leftovers"] == []


def test_a_flood_of_output_is_cut_at_output_bytes(hostile):
    case = hostile["cases"]["flood"]
    assert case["passed"], case["reason"]
    assert len(hostile["results_text"]) < 200_000


@pytest.mark.parametrize(
    "case_id", ["early-os-exit", "early-sys-exit", "early-systemexit", "early-close-token"]
)
def test_exiting_before_the_tests_fails(hostile, case_id):
    case = hostile["cases"][case_id]
    assert (case["passed"], case["label"]) == (False, "test_failed")
    assert "exited before the tests finished" in case["reason"]


def test_killing_itself_before_the_tests_fails(hostile):
    # In a PID namespace the program is init there, and its own SIGKILL is ignored: the tests
    # then run and fail; elsewhere it dies of the signal. Either way: no pass.
    assert not hostile["cases"]["early-kill"]["passed"]


def test_honest_code_still_passes(hostile):
    assert hostile["cases"]["honest"]["passed"], hostile["cases"]["honest"]["reason"]


@pytest.mark.skipif(not isolation().mount_namespace, reason="no mount namespace on this machine")
def test_writes_to_tmp_do_not_persist(hostile):
    assert hostile["cases"]["tmp-write"]["passed"], hostile["cases"]["tmp-write"]["reason"]
    assert hostile["host_tmp"] == []


@pytest.mark.skipif(not isolation().mount_namespace, reason="no mount namespace on this machine")
def test_the_private_tmp_is_capped_at_disk_mb(hostile):
    case = hostile["cases"]["disk-cap"]  # 12 MB into a disk_mb of 8, 3 MB a file (file_mb 4)
    assert not case["passed"]
    assert "No space left on device" in case["reason"]


@pytest.mark.skipif(
    not (isolation().unix_sockets_blocked or isolation().mount_namespace),
    reason="neither seccomp nor a mount namespace on this machine",
)
def test_a_world_writable_host_unix_socket_is_unreachable(hostile):
    case = hostile["cases"]["unix-socket"]
    assert case["passed"], case["reason"]
    assert hostile["accepted"] == []


@pytest.mark.skipif(not isolation().pid_namespace, reason="no PID namespace on this machine")
def test_host_processes_are_not_visible_in_proc(hostile):
    assert hostile["cases"]["proc"]["passed"], hostile["cases"]["proc"]["reason"]


def test_results_and_report_state_the_protections(hostile):
    assert hostile["results"]["sandbox"] == protections()
    assert "wall-time limit" in hostile["results"]["sandbox"]
    for phrase in protections():
        assert html.escape(phrase) in hostile["report"]


def test_eval_help_lists_the_protections():
    done = subprocess.run(
        [sys.executable, "-c", "from punie.cli import main; main()", "eval", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert done.returncode == 0
    assert "Code sandbox on this machine" in done.stdout
    assert "wall-time limit" in done.stdout


@pytest.mark.skipif(not isolation().unix_sockets_blocked, reason="no seccomp filter here")
def test_unix_sockets_are_refused_wherever_they_live():
    outcome = run_python("import socket\nsocket.socket(socket.AF_UNIX)\n")
    assert not outcome.passed
    assert "PermissionError" in outcome.why()


@pytest.mark.skipif(not isolation().mount_namespace, reason="no mount namespace on this machine")
def test_the_program_cannot_unmount_its_private_tmp_or_proc():
    src = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    src += "for target in (b'/tmp', b'/proc'):\n"
    src += "    print(libc.umount2(target, 2), os.strerror(ctypes.get_errno()))\n"
    outcome = run_python(src)
    assert outcome.stdout.splitlines() == ["-1 Operation not permitted"] * 2


def test_socketpair_still_works_under_the_filter():
    outcome = run_python("import socket\na, b = socket.socketpair()\na.send(b'x')\n")
    assert outcome.passed, outcome.why()


# --- the macOS branch, run here by passing a Darwin host ---


def _numbers() -> dict:
    return {"cpu_s": 5, "memory_mb": 512, "file_mb": 16, "nproc": 64}


def test_mac_sets_no_address_space_limit_and_counts_processes_above_the_users():
    limits = dict((n, s) for n, s, _ in sandbox_rlimits(MAC, **_numbers(), user_processes=400))
    assert "RLIMIT_AS" not in limits
    assert limits["RLIMIT_NPROC"] == 464
    linux = dict((n, s) for n, s, _ in sandbox_rlimits(LINUX, **_numbers()))
    assert linux["RLIMIT_AS"] == 512 * 1024 * 1024 and linux["RLIMIT_NPROC"] == 64


def test_mac_has_no_namespaces_and_no_seccomp():
    assert [s.prefix for s in sandbox_strategies(MAC, "/usr/bin/unshare")] == [()]
    assert unix_socket_filter(MAC) is None
    assert sandbox_uid(MAC, 0) == 4294967294 and sandbox_uid(MAC, 501) is None
    assert sandbox_strategies(LINUX, "/usr/bin/unshare")[0].mount_namespace


def test_mac_protections_say_memory_is_polled():
    assert any("memory polled by the parent" in p for p in protections(MAC))


def test_memory_is_enforced_from_the_parent_on_the_mac_branch():
    hog = "import time\nx = []\nwhile True:\n    x.append(bytearray(10_000_000))\n"
    hog += "    time.sleep(0.02)\n"
    outcome = run_python(hog, Limits(wall_s=15, cpu_s=10, memory_mb=128), host=MAC)
    assert (outcome.passed, outcome.killed_for) == (False, "memory")
    assert "memory limit" in outcome.why()
    assert outcome.wall_s < 10


def test_rss_of_a_process_tree_sums_descendants_only():
    ps = "  1     0  100\n 10     1  200\n 11    10  300\n 12     1  400\n junk\n"
    assert rss_of_tree(ps, 10) == 500 * 1024
    assert rss_of_tree(ps, 99) is None


def test_a_child_that_cannot_start_is_one_line():
    with pytest.raises(PunieError, match=r"^code sandbox: cannot start .*") as e:
        run_python("print(1)", Limits(file_mb=2**60))  # too large for an rlimit: preexec fails
    assert "\n" not in str(e.value)


def test_removing_the_temp_folder_opens_locked_folders_but_follows_no_link(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    outside.chmod(0o755)
    work = tmp_path / "punie-sandbox-x"
    (work / "a" / "b").mkdir(parents=True)
    (work / "a" / "b" / "f").write_text("x")
    (work / "link").symlink_to(outside, target_is_directory=True)
    os.mkfifo(work / "fifo")
    (work / "a" / "b").chmod(0)
    (work / "a").chmod(0)
    remove_tree(work)
    assert not work.exists()
    assert (outside / "keep.txt").read_text() == "mine"
    assert outside.stat().st_mode & 0o777 == 0o755


def test_ps_fallback_measures_this_process():
    assert _ps_tree_rss(os.getpid()) > 1_000_000  # a Python process holds more than 1 MB


@pytest.mark.parametrize("value", [0, -1, "lots", 1e300, 2.5])
def test_a_limit_that_is_not_a_positive_number_is_refused(tmp_path, value):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        f"name: s\nkind: code\nlimits: {{disk_mb: {value}}}\ncases:\n"
        "  - {id: a, prompt: q, expect: {tests: pass}}\n"
    )
    with pytest.raises(PunieError, match=r"s\.yaml: limits\.disk_mb: .* is not a positive integer"):
        Suite.load(suite)
