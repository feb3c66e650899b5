"""punie.platform: every OS-dependent choice, its macOS branch run here by passing a Darwin host."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from punie.platform import (
    Host,
    Process,
    children_of,
    chrome_candidates,
    current,
    exists,
    find_chrome,
    mentioning,
    mlx_supported,
    parse_ps,
    peak_rss_bytes,
    processes,
    uv_dirs,
    uv_install_hint,
)

ROOT = Path(__file__).resolve().parent.parent
M2_SONOMA = Host("darwin", "arm64", "14.5")
INTEL_MAC = Host("darwin", "x86_64", "14.5")
ROSETTA = Host("darwin", "x86_64", "14.5", translated=True)
VENTURA = Host("darwin", "arm64", "13.6.1")
LINUX = Host("linux", "x86_64", "6.8.0-45-generic")


def system_python3() -> str:
    """The python3 scripts/setup finds: the first on PATH outside this project's .venv."""
    venv = str(ROOT / ".venv")
    path = os.pathsep.join(p for p in os.get_exec_path() if not p.startswith(venv))
    found = shutil.which("python3", path=path)
    if found is None:
        pytest.skip("no python3 on PATH outside .venv")
    return found


# --- MLX: which machines scripts/setup accepts ---


@pytest.mark.parametrize(
    "host",
    [M2_SONOMA, Host("darwin", "arm64", "15.1"), Host("darwin", "arm64", "26.0"), LINUX,
     Host("linux", "aarch64", "6.1")],
)  # fmt: skip
def test_apple_silicon_on_macos_14_or_later_and_linux_are_supported(host):
    assert mlx_supported(host) is None


@pytest.mark.parametrize(
    ("host", "named"),
    [
        (INTEL_MAC, "Apple silicon"),
        (ROSETTA, "Rosetta"),
        (VENTURA, "macOS 14"),
        (Host("win32", "AMD64", "10"), "macOS 14+ on Apple silicon, or Linux"),
    ],
)
def test_machines_without_mlx_wheels_are_refused_in_one_line_naming_the_requirement(host, named):
    reason = mlx_supported(host)
    assert reason is not None and named in reason
    assert "\n" not in reason


def test_rosetta_is_named_before_the_intel_cpu_it_reports():
    # Under Rosetta, platform.machine() says x86_64 on an Apple-silicon Mac.
    assert "Rosetta" in mlx_supported(ROSETTA)
    assert "Intel" not in mlx_supported(ROSETTA)


def test_setup_check_runs_under_the_system_python3_as_the_script_calls_it():
    out = subprocess.run(
        [system_python3(), "scripts/check_platform.py", "--check-mlx"],
        cwd=ROOT, capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == (1 if mlx_supported(current()) else 0), out.stderr
    assert out.stdout == "" and out.stderr.count("\n") <= 1


# --- memory: ru_maxrss units ---


def test_peak_rss_is_bytes_on_macos_and_kibibytes_on_linux():
    assert peak_rss_bytes(M2_SONOMA, 3_000_000) == 3_000_000
    assert peak_rss_bytes(LINUX, 3_000) == 3_072_000


def test_peak_rss_of_a_real_child_is_its_allocation_in_bytes():
    # A fresh wrapper whose only child allocates 256 MiB: the wrong unit would be off 1024x.
    child = "b = bytearray(256 << 20)"
    wrapper = (
        "import resource, subprocess, sys; "
        f"subprocess.run([sys.executable, '-c', {child!r}], check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper], capture_output=True, text=True, timeout=60
    )
    peak = peak_rss_bytes(current(), int(out.stdout))
    assert 256 << 20 < peak < 1 << 30
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0


# --- processes: without /proc ---


def test_ps_output_parses_with_spaces_in_commands():
    text = (
        "    1     0 /sbin/launchd\n"
        "  812     1 /Applications/Google Chrome.app/Contents/MacOS/Google Chrome --headless\n"
        "  900   812 \n"
    )
    assert parse_ps(text) == [
        Process(1, 0, "/sbin/launchd"),
        Process(812, 1, "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome --headless"),
        Process(900, 812, ""),
    ]


def test_children_of_follows_the_tree_parents_first():
    table = [Process(10, 1, "a"), Process(11, 10, "b"), Process(12, 11, "c"), Process(13, 1, "d")]
    assert [p.pid for p in children_of(10, table)] == [11, 12]
    assert children_of(12, table) == []


SOURCES = ["ps"] + (["psutil"] if __import__("importlib").util.find_spec("psutil") else [])


@pytest.mark.parametrize("source", SOURCES)
def test_processes_finds_a_real_child_and_grandchild_and_forgets_them_once_gone(source, tmp_path):
    marker = f"punie-platform-test-{os.getpid()}-{source}"
    # The child starts a grandchild and both sleep; the marker is in both command lines.
    grandchild = f"import time; time.sleep(60)  # {marker}"
    code = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {grandchild!r}]); time.sleep(60)"  # noqa: E501
    child = subprocess.Popen([sys.executable, "-c", code, marker], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while len(mentioning(marker, processes(source))) < 2:
            assert time.monotonic() < deadline, "the grandchild never appeared"
            time.sleep(0.05)
        table = processes(source)
        tree = children_of(os.getpid(), table)
        mine = [p for p in tree if marker in p.command]
        assert [p.ppid for p in mine] == [os.getpid(), child.pid]
        assert all(exists(p.pid) for p in mine)
    finally:
        os.killpg(child.pid, 9)
        child.wait()
    deadline = time.monotonic() + 10
    while mentioning(marker, processes(source)):
        assert time.monotonic() < deadline, "the grandchild outlived the kill"
        time.sleep(0.05)
    assert not exists(child.pid)


def test_mentioning_leaves_out_this_process_and_the_ps_it_ran():
    assert mentioning(f"pid={os.getpid()} no process says this") == []


# --- setup: uv ---


def test_a_framework_python_user_base_bin_is_searched_for_uv():
    dirs = uv_dirs(
        M2_SONOMA,
        home="/Users/ada",
        user_base="/Users/ada/Library/Python/3.9",
        scripts="/Library/Developer/CommandLineTools/usr/bin",
    )
    assert "/Users/ada/Library/Python/3.9/bin" in dirs
    assert "/Users/ada/.local/bin" in dirs and "/opt/homebrew/bin" in dirs


def test_linux_uv_dirs_have_no_duplicates_and_no_homebrew():
    dirs = uv_dirs(LINUX, home="/home/ada", user_base="/home/ada/.local", scripts="/usr/bin")
    assert dirs == ["/home/ada/.local/bin", "/usr/bin"]


def test_uv_path_includes_the_user_base_that_python3_m_site_reports():
    python3 = system_python3()
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    base = subprocess.run(
        [python3, "-m", "site", "--user-base"], capture_output=True, text=True, env=env
    ).stdout.strip()
    out = subprocess.run(
        [python3, "scripts/check_platform.py", "--uv-path"],
        cwd=ROOT, capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"{base}/bin" in out.stdout.strip().split(":")


def test_homebrew_python_refusing_pip_is_answered_with_brew_install_uv():
    assert uv_install_hint(M2_SONOMA) == "brew install uv"
    assert "brew" not in uv_install_hint(LINUX)


def _setup_copy(tmp_path: Path, pip: str) -> tuple[Path, dict[str, str]]:
    """A copy of the scripts (setup can touch nothing here) and a python3 whose `-m pip` runs
    `pip`: pip's outcomes (a refusal, a user-base install) are faults this machine cannot take on
    for real; everything else is the real system python3."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    (repo / "src/punie").mkdir(parents=True)
    shutil.copy(ROOT / "src/punie/platform.py", repo / "src/punie/platform.py")
    real = system_python3()
    shim = tmp_path / "bin" / "python3"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nif [ "$1 $2" = "-m pip" ]; then\n{pip}\nfi\nexec {real} "$@"\n')
    shim.chmod(0o755)
    env = {"PATH": f"{shim.parent}:/usr/bin:/bin", "HOME": str(tmp_path / "home")}
    dirs = subprocess.run(
        [str(shim), "scripts/check_platform.py", "--uv-path"],
        cwd=repo, capture_output=True, text=True, env=env,
    ).stdout.strip()  # fmt: skip
    if shutil.which("uv", path=f"{env['PATH']}:{dirs}"):
        pytest.skip("a uv is installed where setup would find it")
    return repo, env


def test_setup_shows_pips_refusal_and_says_how_to_install_uv(tmp_path):
    refuse = (
        "echo 'error: externally-managed-environment' >&2\n"
        "echo 'This environment is externally managed' >&2\nexit 1"
    )
    repo, env = _setup_copy(tmp_path, refuse)
    out = subprocess.run(
        ["bash", "scripts/setup"], cwd=repo, capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 1, out.stderr
    assert "externally-managed-environment" in out.stderr  # pip's own words are shown
    last = out.stderr.strip().splitlines()[-1]
    assert last == (
        "setup: this python3 does not allow pip installs; install uv with: "
        + uv_install_hint(current())
    )
    assert sorted(p.name for p in repo.iterdir()) == ["scripts", "src"]  # no .venv, nothing else


def test_setup_finds_uv_where_pip_user_put_it(tmp_path):
    # pip --user puts uv in the user base's bin (~/Library/Python/X.Y/bin on a framework Python),
    # which need not be on PATH; this uv only records that setup ran it.
    install = (
        'bin="$(python3 -m site --user-base)/bin"; mkdir -p "$bin"\n'
        'printf \'#!/bin/sh\\necho "$@" >> %s/uv-calls\\n\' "$HOME" > "$bin/uv"\n'
        'chmod +x "$bin/uv"\n'
        "echo \"WARNING: The script uv is installed in '$bin' which is not on PATH.\" >&2\nexit 0"
    )
    repo, env = _setup_copy(tmp_path, install)
    Path(env["HOME"]).mkdir()
    out = subprocess.run(
        ["bash", "scripts/setup"], cwd=repo, capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "is not on PATH" in out.stderr  # pip's warning is shown, not hidden
    calls = (Path(env["HOME"]) / "uv-calls").read_text().splitlines()
    assert calls and calls[0].startswith("sync")


# --- reports: a browser for the rendered-report test ---


def test_chrome_candidates_on_a_mac_include_the_app_bundles_after_punie_chrome():
    found = chrome_candidates(M2_SONOMA, {"PUNIE_CHROME": "/opt/c/chrome", "HOME": "/Users/ada"})
    assert found[0] == "/opt/c/chrome"
    assert "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome" in found
    assert "/Applications/Chromium.app/Contents/MacOS/Chromium" in found
    assert "/Users/ada/Applications/Chromium.app/Contents/MacOS/Chromium" in found


def test_chrome_candidates_on_linux_are_names_on_path():
    found = chrome_candidates(LINUX, {"HOME": "/home/ada"})
    assert "chromium" in found and not any(".app/" in c for c in found)


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_find_chrome_finds_a_chromium_app_bundle_in_the_users_applications(tmp_path):
    app = _executable(tmp_path / "Applications/Chromium.app/Contents/MacOS/Chromium")
    env = {"HOME": str(tmp_path), "PATH": str(tmp_path / "empty")}
    assert find_chrome(M2_SONOMA, env) == str(app)
    assert find_chrome(LINUX, env) is None


def test_punie_chrome_wins(tmp_path):
    mine = _executable(tmp_path / "my chrome" / "chrome")
    env = {"PUNIE_CHROME": str(mine), "PATH": os.environ.get("PATH", "")}
    assert find_chrome(LINUX, env) == str(mine)


# --- CI ---


def test_ci_runs_scripts_test_on_apple_silicon_and_linux():
    ci = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    triggers = ci.get("on", ci.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "push" in triggers and "pull_request" in triggers
    (job,) = ci["jobs"].values()
    runners = job["strategy"]["matrix"]["os"]
    assert "ubuntu-latest" in runners
    assert any(r.startswith("macos-") and r != "macos-13" and "intel" not in r for r in runners)
    assert job["runs-on"] == "${{ matrix.os }}"
    uses = [s["uses"].split("@")[0] for s in job["steps"] if "uses" in s]
    assert uses[0] == "actions/checkout"
    runs = [s["run"] for s in job["steps"] if "run" in s]
    assert runs and runs[-1].startswith("scripts/test")
    assert (ROOT / "scripts/test").stat().st_mode & 0o111
