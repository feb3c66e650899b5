"""The `peft` backend: registered as entry point `peft` in the `punie.backends` group.

Loading this module imports no torch: `punie backends` lists the backend, and `check` refuses a
bad request, in milliseconds and even where the `cuda` extra is missing. Training runs in this
process, or under `accelerate launch` when the config asks for it:

    extra = { launcher = "accelerate", num_processes = 2 }          # DDP, one GPU per process
    extra = { launcher = "accelerate", accelerate_config = "fsdp.yaml" }  # FSDP / DeepSpeed ZeRO
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from punie.backends.base import Capabilities, FuseResult, MetricsCallback
from punie.errors import BackendError
from punie_peft import mapping
from punie_peft.launcher import Launch, accelerate_command, run_accelerate
from punie_peft.libraries import library_versions, missing_libraries
from punie_peft.merge import fuse_run

LAUNCHERS = ("local", "accelerate")


def launch_plan(config: Any):
    """The accelerate Launch for `config`, or None to train in this process."""
    launcher = mapping.option(config, "launcher", "local")
    if launcher not in LAUNCHERS:
        raise BackendError(f"launcher: {launcher!r} is not one of {', '.join(LAUNCHERS)}")
    if launcher == "local":
        return None
    return Launch(
        num_processes=int(mapping.option(config, "num_processes", 1)),
        cpu=bool(mapping.option(config, "cpu", False)),
        config_file=mapping.option(config, "accelerate_config"),
        num_machines=int(mapping.option(config, "num_machines", 1)),
        machine_rank=int(mapping.option(config, "machine_rank", 0)),
        main_process_ip=mapping.option(config, "main_process_ip"),
        main_process_port=int(mapping.option(config, "main_process_port", 29500)),
    )


class PeftBackend:
    name = "peft"

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

    def check(self, config: Any) -> None:
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
        if mapping.option(config, "from_adapter"):
            raise BackendError("from_adapter: not supported by backend peft yet (train afresh)")
        plan = launch_plan(config)
        if plan is not None:
            accelerate_command(plan, Path("."))  # refuses a bad plan before anything starts

    def train(self, config: Any, run_dir: Path, on_metrics: MetricsCallback | None = None) -> Path:
        plan = launch_plan(config)
        if plan is None:
            # The trainer imports transformers and torch: only when training here, so that
            # listing and checking this backend stays light and works without the cuda extra.
            from punie_peft.trainer import train_here

            return train_here(config, Path(run_dir), on_metrics)
        return run_accelerate(config, Path(run_dir), plan, on_metrics)

    def fuse(
        self,
        run_dir: Path,
        out: Path,
        *,
        checkpoint: str = "best",
        dequantize: bool = False,
        gguf: bool = False,
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
