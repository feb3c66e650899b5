"""The sandboxed child's own first code: it sets the sandbox up, runs the program, and proves the
program ran to its end.

The parent runs this file's text with `python -I -c`, so nothing of Punie needs to be readable by
the child, and gives it two arguments: the number of an inherited pipe (the result pipe) and the
temp folder's path (only so that `ps` shows which sandbox a process belongs to). On
stdin it sends one JSON object and closes it:

- `source`: the program (the model's code, then the case's tests);
- `nonce`: a random token, new for every run;
- `mounts`: where a mount namespace is ready, the size in MB of the private tmpfs to mount on
  /tmp (bound on /var/tmp and /dev/shm too, and holding the working folder), else null;
- `seccomp`: a seccomp filter (hex) to install, or null.

After setting up, stdin becomes /dev/null, and the program runs as `__main__`. Only when it
returns does the harness write the nonce to the result pipe: a program that exits early
(`sys.exit`, `os._exit`, a signal, closing its descriptors) never sends it, so the parent does
not count its exit status as a pass. The program could still find the nonce in this process's
memory; docs/security.md says so.
"""

import ctypes
import json
import os
import sys
import traceback
import types

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, PR_CAPBSET_DROP = 38, 22, 24
SECCOMP_MODE_FILTER = 2
MS_NOSUID, MS_NODEV, MS_BIND = 2, 4, 4096
SETUP_FAILED = 125


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]  # fmt: skip


def fail(step):
    err = ctypes.get_errno()
    sys.stderr.write(f"punie sandbox: {step}: {os.strerror(err)}\n")
    sys.stderr.flush()
    os._exit(SETUP_FAILED)


def private_tmp(libc, size_mb):
    """One size-capped tmpfs on /tmp, also seen at /var/tmp and /dev/shm; the working folder
    moves onto it (same path, empty) so everything the program writes counts against the cap."""
    work = os.getcwd()
    flags = MS_NOSUID | MS_NODEV
    if libc.mount(b"tmpfs", b"/tmp", b"tmpfs", flags, f"size={size_mb}m,mode=1777".encode()):
        fail("mount tmpfs on /tmp")
    for target in ("/var/tmp", "/dev/shm"):
        if os.path.isdir(target) and libc.mount(b"/tmp", target.encode(), None, MS_BIND, None):
            fail(f"bind /tmp on {target}")
    fresh = os.path.join("/tmp", os.path.basename(work)) if not work.startswith("/tmp/") else work
    os.makedirs(fresh, mode=0o700, exist_ok=True)
    os.chdir(fresh)
    os.environ["HOME"] = fresh


def drop_capabilities(libc):
    """Root of a user namespace could unmount the private /tmp and /proc to see the host's
    beneath: give up every capability, for this process and anything it executes."""
    cap = 0
    while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    if cap == 0:
        fail("drop the capability bounding set")
    empty = (CapData * 2)()
    if libc.capset(ctypes.byref(CapHeader(0x20080522, 0)), empty):
        fail("clear capabilities")


def install_seccomp(libc, program):
    buf = ctypes.create_string_buffer(program, len(program))
    prog = SockFprog(len(program) // 8, ctypes.addressof(buf))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0):
        fail("set no_new_privs")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0):
        fail("install the seccomp filter")


def main():
    result_fd = int(sys.argv[1])
    with os.fdopen(0, "rb", closefd=False) as stdin:
        job = json.loads(stdin.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    nonce = job.pop("nonce").encode()
    if job["mounts"] or job["seccomp"]:
        libc = ctypes.CDLL(None, use_errno=True)
        if job["mounts"]:
            private_tmp(libc, job["mounts"])
            drop_capabilities(libc)
        if job["seccomp"]:
            install_seccomp(libc, bytes.fromhex(job["seccomp"]))
    path = os.path.join(os.getcwd(), "main.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(job["source"])
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__builtins__ = __builtins__
    sys.modules["__main__"] = module
    sys.argv = [path]
    try:
        exec(compile(job.pop("source"), path, "exec"), module.__dict__)
    except Exception as e:
        # The program's traceback, without this harness's frame.
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        sys.exit(1)
    os.write(result_fd, nonce)
    os.close(result_fd)


if __name__ == "__main__":
    main()
