"""Punie: teach a small open model your agent's tools, and prove it got better.

`import punie` is the whole product; the `punie` command is a thin shell over it. Names load on
first use, so importing the package starts no ML library.

Train (see docs/api.md):
    train(config) -> Run            train a TrainConfig (or a config file) into its run folder
    resume(run) -> Run              continue an interrupted run from its checkpoint
    load_config(path, ...)          a TrainConfig from a file, `key=value` items and overrides
    run_config(run)                 the config a run was started with
    default_run_dir(model)          where a run goes when it is not named
    fuse(run, out) -> FuseResult    merge a run's adapter, through the backend that trained it
    get_backend(name)               a training backend (mlx, peft) by name
    TrainingCallback                subclass it to hear training events (train and validation
                                    reports as MetricsRecord, checkpoints, warnings, stages)
    RunDir(path)                    every path of a run folder; RunRecord is its run.json

Evaluate and compare:
    evaluate(suite, model, adapter=None, base_url=None, ...) -> EvalResult
    evaluate_plan(EvalPlan(...)) -> EvalRun     several suites and adapters through one server
    compare(a, b) -> Comparison                 B against A, paired, with 95% intervals
    compare_runs([...]) -> [Comparison]         each later result against its suite's first
    load_results(paths)                         results files or eval run folders
    write_report(path, results)                 an HTML report
    import_bfcl(questions, output, answers)     a suite from BFCL (function-calling) files
    Server(model, adapters=[...]).start() / with Server(model) as s: ...
                                                an OpenAI-compatible server (served ids, errors,
                                                API key) in front of a managed mlx_lm.server

Datasets (those that write leave a manifest.json beside the output, and return an Output):
    validate_dataset(path, model=None) -> ValidationSummary    dataset_stats(path) -> DatasetStats
    sample_dataset (the built-in sample set), convert_dataset, filter_dataset (FilterSpec),
    dedupe_dataset, split_dataset, mix_datasets ([MixSource(path, ratio), ...]),
    merge_datasets, decontaminate_dataset, pair_dataset (preference rows from eval results),
    ablate_dataset (drop or shuffle a prompt span, in a dataset or a suite),
    from_results (SFT rows from scored responses: rejection sampling, distillation)

Generate and bootstrap (see docs/loop.md):
    generate(prompts, out, model=...) -> Generated   sampled responses with provenance, resumable
    loop(config) -> LoopResult                        solve, verify, train, evaluate, repeat

Types: TrainConfig, Run, RunDir, RunRecord, MetricsRecord, TrainingCallback, TrainingEvents,
FuseResult, Backend, Capabilities, Suite, Case, Sampling, EvalPlan, EvalRun, EvalResult,
CaseResult, Comparison, ValidationSummary, DatasetStats, DatasetOutput.

Errors: PunieError, and its kinds ConfigError, DataError, BackendError (TrainingInterrupted),
ServerError, EvalError; PunieWarning for what was skipped.
"""

__version__ = "0.1.0"

# name -> "module:attribute"; loaded by __getattr__ on first use
_EXPORTS: dict[str, str] = {
    # training
    "train": "punie.api:train",
    "resume": "punie.api:resume",
    "load_config": "punie.api:load_config",
    "run_config": "punie.api:run_config",
    "default_run_dir": "punie.api:default_run_dir",
    "fuse": "punie.api:fuse",
    "compare_training_runs": "punie.api:compare_training_runs",
    "sweep": "punie.api:sweep",
    "get_backend": "punie.backends:get_backend",
    "Run": "punie.api:Run",
    "TrainConfig": "punie.train.config:TrainConfig",
    "FuseResult": "punie.backends.base:FuseResult",
    "Backend": "punie.backends.base:Backend",
    "Capabilities": "punie.backends.base:Capabilities",
    "RunDir": "punie.train.rundir:RunDir",
    "RunRecord": "punie.train.records:RunRecord",
    "MetricsRecord": "punie.train.records:MetricsRecord",
    "TrainingCallback": "punie.train.callbacks:TrainingCallback",
    "TrainingEvents": "punie.train.callbacks:TrainingEvents",
    # evaluation
    "evaluate": "punie.api:evaluate",
    "evaluate_plan": "punie.api:evaluate_plan",
    "compare": "punie.api:compare",
    "compare_runs": "punie.api:compare_runs",
    "load_results": "punie.session:load_results",
    "write_report": "punie.api:write_report",
    "import_bfcl": "punie.eval.bfcl:import_bfcl",
    "Server": "punie.serve.front:FrontServer",
    "Suite": "punie.eval.suite:Suite",
    "Case": "punie.eval.suite:Case",
    "Sampling": "punie.sampling:Sampling",
    "EvalPlan": "punie.session:EvalPlan",
    "EvalRun": "punie.session:EvalRun",
    "EvalResult": "punie.eval.runner:EvalResult",
    "CaseResult": "punie.eval.runner:CaseResult",
    "Comparison": "punie.eval.compare:Comparison",
    # datasets
    "sample_dataset": "punie.data.download:download_sample",
    "validate_dataset": "punie.data.validate:validate",
    "dataset_stats": "punie.data.stats:dataset_stats",
    "convert_dataset": "punie.data.convert:convert_dataset",
    "filter_dataset": "punie.data.filters:filter_dataset",
    "dedupe_dataset": "punie.data.dedupe:dedupe_dataset",
    "split_dataset": "punie.data.split:split_dataset",
    "mix_datasets": "punie.data.mix:mix",
    "merge_datasets": "punie.data.mix:merge",
    "decontaminate_dataset": "punie.api:decontaminate_dataset",
    "pair_dataset": "punie.api:pair_dataset",
    "from_results": "punie.api:from_results",
    "generate": "punie.api:generate",
    "loop": "punie.api:loop",
    "LoopConfig": "punie.bootstrap:LoopConfig",
    "LoopResult": "punie.bootstrap:LoopResult",
    "ablate_dataset": "punie.api:ablate_dataset",
    "FilterSpec": "punie.data.filters:FilterSpec",
    "MixSource": "punie.data.mix:Source",
    "ValidationSummary": "punie.data.validate:ValidationSummary",
    "DatasetStats": "punie.data.stats:DatasetStats",
    "DatasetOutput": "punie.data.output:Output",
    # errors
    "PunieError": "punie.errors:PunieError",
    "ConfigError": "punie.errors:ConfigError",
    "DataError": "punie.errors:DataError",
    "BackendError": "punie.errors:BackendError",
    "TrainingInterrupted": "punie.errors:TrainingInterrupted",
    "ServerError": "punie.errors:ServerError",
    "EvalError": "punie.errors:EvalError",
    "PunieWarning": "punie.errors:PunieWarning",
}

__all__ = [
    "__version__",
    "train",
    "resume",
    "load_config",
    "run_config",
    "default_run_dir",
    "fuse",
    "get_backend",
    "Run",
    "TrainConfig",
    "FuseResult",
    "Backend",
    "Capabilities",
    "RunDir",
    "RunRecord",
    "MetricsRecord",
    "TrainingCallback",
    "TrainingEvents",
    "evaluate",
    "evaluate_plan",
    "compare",
    "compare_runs",
    "load_results",
    "write_report",
    "import_bfcl",
    "Server",
    "Suite",
    "Case",
    "Sampling",
    "EvalPlan",
    "EvalRun",
    "EvalResult",
    "CaseResult",
    "Comparison",
    "sample_dataset",
    "validate_dataset",
    "dataset_stats",
    "convert_dataset",
    "filter_dataset",
    "dedupe_dataset",
    "split_dataset",
    "mix_datasets",
    "merge_datasets",
    "decontaminate_dataset",
    "pair_dataset",
    "ablate_dataset",
    "from_results",
    "generate",
    "loop",
    "LoopConfig",
    "LoopResult",
    "FilterSpec",
    "MixSource",
    "ValidationSummary",
    "DatasetStats",
    "DatasetOutput",
    "PunieError",
    "ConfigError",
    "DataError",
    "BackendError",
    "TrainingInterrupted",
    "ServerError",
    "EvalError",
    "PunieWarning",
]


def __getattr__(name: str) -> object:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'punie' has no attribute {name!r}")
    from importlib import import_module  # here, so `import punie` itself imports nothing

    module, _, attribute = target.partition(":")
    value = getattr(import_module(module), attribute)
    globals()[name] = value  # loaded once; later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def _keep_api_names() -> None:
    """`punie.train` is the function, though `punie/train/` is also a subpackage.

    Importing a submodule binds it on its parent (`punie.train = <module>`), which would hide
    the function the first time anything imports `punie.train.config`. This module's class drops
    that one binding; the subpackage stays importable (`from punie.train import runs`)."""
    import sys

    ModuleType = type(sys)  # types.ModuleType, without importing `types`

    class _Punie(ModuleType):
        def __setattr__(self, name: str, value: object) -> None:
            if name in _EXPORTS and isinstance(value, ModuleType):
                return
            super().__setattr__(name, value)

    sys.modules[__name__].__class__ = _Punie


_keep_api_names()


TYPE_CHECKING = False  # typing's constant, without importing typing (it costs milliseconds)
if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ loads these
    from punie.api import (
        Run,
        ablate_dataset,
        compare,
        compare_runs,
        decontaminate_dataset,
        default_run_dir,
        evaluate,
        evaluate_plan,
        from_results,
        fuse,
        generate,
        load_config,
        loop,
        pair_dataset,
        resume,
        run_config,
        train,
        write_report,
    )
    from punie.backends import get_backend
    from punie.backends.base import Backend, Capabilities, FuseResult
    from punie.bootstrap import LoopConfig, LoopResult
    from punie.data.convert import convert_dataset
    from punie.data.dedupe import dedupe_dataset
    from punie.data.download import download_sample as sample_dataset
    from punie.data.filters import FilterSpec, filter_dataset
    from punie.data.mix import Source as MixSource
    from punie.data.mix import merge as merge_datasets
    from punie.data.mix import mix as mix_datasets
    from punie.data.output import Output as DatasetOutput
    from punie.data.split import split_dataset
    from punie.data.stats import DatasetStats, dataset_stats
    from punie.data.validate import ValidationSummary
    from punie.data.validate import validate as validate_dataset
    from punie.errors import (
        BackendError,
        ConfigError,
        DataError,
        EvalError,
        PunieError,
        PunieWarning,
        ServerError,
        TrainingInterrupted,
    )
    from punie.eval.compare import Comparison
    from punie.eval.runner import CaseResult, EvalResult
    from punie.eval.suite import Case, Suite
    from punie.sampling import Sampling
    from punie.serve.front import FrontServer as Server
    from punie.session import EvalPlan, EvalRun, load_results
    from punie.train.callbacks import TrainingCallback, TrainingEvents
    from punie.train.config import TrainConfig
    from punie.train.records import MetricsRecord, RunRecord
    from punie.train.rundir import RunDir
