# Sourced by scripts/setup, scripts/test and scripts/demo: puts a pip-installed uv on PATH. pip's
# --user installs land in the user base's bin (`python3 -m site --user-base`): ~/.local/bin on
# Linux, ~/Library/Python/X.Y/bin under a framework Python on macOS (punie.platform.uv_dirs).
# Appended, not prepended: a uv already on PATH wins, and these folders (a Python's own bin among
# them) never shadow the user's python3.
_punie_scripts="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"
PATH="$PATH:$(python3 "$_punie_scripts/check_platform.py" --uv-path 2>/dev/null || echo "$HOME/.local/bin")"
export PATH
unset _punie_scripts
