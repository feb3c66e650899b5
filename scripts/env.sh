# Sourced by scripts/setup, scripts/test and scripts/demo: where a pip-installed uv lands.
PATH="$HOME/.local/bin:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH
