"""The `peft` backend: registered as entry point `peft` in the `punie.backends` group.

Loading this module imports no torch: `punie backends` lists the backend, and `check` refuses a
bad request, in milliseconds and even where the `cuda` extra is missing. Training runs in this
process, or under `accelerate launch` when the config asks for it:

    extra = { launcher = "accelerate", num_processes = 2 }          # DDP, one GPU per process
    extra = { launcher = "accelerate", accelerate_config = "fsdp.yaml" }  # FSDP / DeepSpeed ZeRO
"""

from __future__ import annotations

from pathlib import Path

from punie.backends.base import Capabilities, FuseResult
from punie.errors import BackendError
from punie.train.callbacks import TrainingEvents
from punie.train.config import TrainConfig
from punie.train.rundir import RunDir
from punie_peft import mapping
from punie_peft.convert import start_kind
from punie_peft.launcher import Launch, accelerate_command, run_accelerate
from punie_peft.libraries import library_versions, missing_libraries
from punie_peft.merge import fuse_run
from punie_peft.options import PeftOptions, peft_options


def launch_plan(config: TrainConfig) -> Launch | None:
    """The accelerate Launch for `config`, or None to train in this process."""
    options = peft_options(config)
    if options.launcher == "local":
        return None
    return Launch(
        num_processes=options.num_processes,
        cpu=bool(options.cpu),
        config_file=options.accelerate_config,
        num_machines=options.num_machines,
        machine_rank=options.machine_rank,
        main_process_ip=options.main_process_ip,
        main_process_port=options.main_process_port,
    )


class PeftBackend:
    name = "peft"
    options_type = PeftOptions

    def options(self, config: TrainConfig) -> PeftOptions:
        return peft_options(config)

    def capabilities(self) -> Capabilities:
        return Capabilities(
            fine_tune_types=("lora", "dora", "full"),
            methods=mapping.METHODS,
            quantized_base=True,
            multi_process=True,
            notes="PyTorch + PEFT + TRL; QLoRA (4-bit) needs CUDA; accelerate for many GPUs",
        )

    def versions(self) -> dict[str, str]:
        return library_versions()

    def missing_libraries(self) -> list[str]:
        return missing_libraries()

    def check(self, config: TrainConfig) -> None:
        self.options(config)  # unknown extra.* keys first: they need no library
        missing = missing_libraries()
        if missing:
            raise BackendError(
                f"backend peft: {', '.join(missing)} not installed; pip install 'punie[cuda]'"
            )
        mapping.method(config)
        mapping.device_request(config)
        bits = mapping.quantize_bits(config)
        if bits and config.fine_tune_type == "full":
            raise BackendError("quantize: 4-bit QLoRA trains an adapter; use lora or dora")
        if config.from_adapter and config.method not in ("grpo", "dpo"):
            raise BackendError(
                "from_adapter: backend peft continues from an adapter for methods grpo and dpo "
                "only (train sft afresh)"
            )
        if config.from_adapter:
            start_kind(config)
        plan = launch_plan(config)
        if plan is not None:
            accelerate_command(plan, Path("."))  # refuses a bad plan before anything starts

    def train(self, config: TrainConfig, run: RunDir, events: TrainingEvents) -> Path:
        plan = launch_plan(config)
        if plan is None:
            # The trainer imports transformers and torch: only when training here, so that
            # listing and checking this backend stays light and works without the cuda extra.
            from punie_peft.trainer import train_here

            return train_here(config, run, events)
        return run_accelerate(config, run, plan, events)

    def fuse(
        self,
        run_dir: Path,
        out: Path,
        *,
        checkpoint: str = "best",
        dequantize: bool = False,
        gguf: str | None = None,
        parity: bool = True,
    ) -> FuseResult:
        """PEFT's merge_and_unload. A peft run keeps one adapter (no `best/`), so `best` is the
        final one, as for an mlx run without validation; the merge has no parity check."""
        if checkpoint not in ("best", "final"):
            raise BackendError(f"--checkpoint: {checkpoint!r} is not one of best, final")
        for flag, asked in (("--gguf", gguf), ("--dequantize", dequantize)):
            if asked:
                raise BackendError(f"{flag}: not supported by backend peft (fuse without it)")
        return fuse_run(Path(run_dir), Path(out))
