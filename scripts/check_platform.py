"""Platform checks for scripts/setup and scripts/env.sh, run with the system python3.

They run before uv and .venv exist, so this loads src/punie/platform.py (standard library only) by
its path, without importing the punie package or anything it depends on. Works on Python 3.9+
(the python3 of macOS's Command Line Tools).

    python3 scripts/check_platform.py --check-mlx  # no MLX wheel here: one line, exit 1
    python3 scripts/check_platform.py --uv-path    # PATH entries where uv may be installed
    python3 scripts/check_platform.py --uv-hint    # how to install uv where pip refuses
"""

import importlib.util
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "src" / "punie" / "platform.py"


def load_platform():
    spec = importlib.util.spec_from_file_location("punie_platform_check", SOURCE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def main(argv) -> int:
    if sys.version_info < (3, 9):  # noqa: UP036 - the system python3, not the project's
        found = sys.version.split()[0]
        print(f"setup: python3 is {found}; setup needs 3.9 or later", file=sys.stderr)
        return 1
    plat = load_platform()
    if argv == ["--check-mlx"]:
        reason = plat.mlx_supported(plat.current())
        if reason:
            print(f"setup: {reason}", file=sys.stderr)
            return 1
        return 0
    if argv == ["--uv-path"]:
        print(":".join(plat.uv_dirs_here()))
        return 0
    if argv == ["--uv-hint"]:
        print(plat.uv_install_hint(plat.current()))
        return 0
    print("usage: check_platform.py --check-mlx | --uv-path | --uv-hint", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
