"""The public API: what `import punie` offers, what it costs, and docs/api.md's examples, run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import punie
from punie.cli import EXIT_CODES, exit_code
from punie.errors import (
    BackendError,
    ConfigError,
    DataError,
    EvalError,
    PunieError,
    ServerError,
    TrainingInterrupted,
)

ROOT = Path(__file__).resolve().parents[1]
API_DOC = ROOT / "docs" / "api.md"
CORE = ("train", "resume", "fuse", "evaluate", "compare", "write_report", "Server", "TrainConfig")
DATASET = ("validate_dataset", "dataset_stats", "convert_dataset", "filter_dataset",
           "dedupe_dataset", "split_dataset", "mix_datasets", "merge_datasets",
           "decontaminate_dataset")  # fmt: skip
RUN_TYPES = ("RunDir", "RunRecord", "MetricsRecord", "TrainingCallback", "TrainingEvents")
ERRORS = ("PunieError", "ConfigError", "DataError", "BackendError", "ServerError", "EvalError")


def python(code: str, cwd: Path | None = None, timeout: float = 60) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_help_shows_the_api():
    shown = python("import punie; help(punie)")
    for name in (*CORE, *DATASET, *RUN_TYPES, *ERRORS):
        assert re.search(rf"\b{name}\b", shown), name


def test_every_name_in_all_resolves_and_is_listed_by_dir():
    for name in punie.__all__:
        assert getattr(punie, name) is not None, name
    assert set(punie.__all__) <= set(dir(punie))
    assert {*CORE, *DATASET, *RUN_TYPES, *ERRORS} <= set(punie.__all__)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        punie.no_such_thing  # noqa: B018


def test_punie_train_stays_the_function_after_its_subpackage_is_imported():
    out = python(
        "import punie\n"
        "import punie.train.launch\n"
        "from punie.train import runs\n"
        "print(punie.train.__module__, callable(punie.train), runs.__name__)"
    )
    assert out.split() == ["punie.api", "True", "punie.train.runs"]


def test_import_punie_imports_no_ml_library():
    heavy = ("mlx", "mlx_lm", "torch", "transformers", "numpy", "httpx", "typer")
    out = python(
        "import sys, punie\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))"
    )
    assert out.strip() == "[]"


def test_loading_the_whole_api_imports_neither_mlx_nor_torch():
    out = python(
        "import sys, punie\n"
        "[getattr(punie, n) for n in punie.__all__]\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'mlx', 'mlx_lm', 'torch'}))"
    )
    assert out.strip() == "[]"


def test_the_package_is_typed():
    assert (Path(punie.__file__).parent / "py.typed").is_file()


def test_error_kinds_are_punie_errors_and_map_to_exit_codes_in_one_table():
    for kind in (ConfigError, DataError, BackendError, ServerError, EvalError):
        assert issubclass(kind, PunieError)
        assert exit_code(kind("x")) == 2
    assert exit_code(TrainingInterrupted("stopped")) == 130
    assert EXIT_CODES[-1] == (PunieError, 2)  # the catch-all comes last


def test_each_error_kind_names_where_it_came_from(tmp_path):
    with pytest.raises(ConfigError, match="rank: must be at least 1"):
        punie.TrainConfig(model="m", data="d", rank=0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:1"):
        punie.dataset_stats(bad)
    with pytest.raises(EvalError, match="no such suite"):
        punie.Suite.load(tmp_path / "missing.yaml")
    with pytest.raises(ServerError, match="startup timeout"):
        punie.Server("m", startup_timeout=0)
    with pytest.raises(BackendError, match="not installed"):
        punie.get_backend("no-such-backend")


def test_cli_exits_2_with_one_line_for_a_config_error(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('model = "m"\ndata = "d"\nrank = 0\n')
    result = subprocess.run(
        [sys.executable, "-m", "punie", "train", str(config), "--print-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {config}: rank: must be at least 1, got 0"
    ]


def test_compare_runs_needs_two_runs_of_one_suite():
    with pytest.raises(EvalError, match="nothing to compare"):
        punie.compare_runs([])


def test_default_run_dir_is_under_the_runs_folder_named_for_the_model(tmp_path):
    folder = punie.default_run_dir("models/Qwen2.5-0.5B/", tmp_path)
    assert folder.parent == tmp_path
    assert re.fullmatch(r"Qwen2\.5-0\.5B-\d{8}-\d{6}", folder.name)


def doc_examples() -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", API_DOC.read_text(), re.S))


@pytest.mark.slow
def test_docs_api_examples_run(tmp_path):
    """Every python block of docs/api.md, in order, as one script: tiny model, a 12-step run."""
    code = doc_examples()
    assert "punie.train(" in code and "punie.evaluate(" in code and "punie.fuse(" in code
    out = python(code, cwd=tmp_path, timeout=600)
    assert "adapters/first completed 12" in out
    assert "parity ok" in out
    assert "rank: must be at least 1" in out
    assert (tmp_path / "runs" / "report.html").is_file()
    assert (tmp_path / "models" / "first-fused" / "Modelfile").is_file()
