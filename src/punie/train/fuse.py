"""`punie fuse`: a run's adapter merged into its base model, an Ollama Modelfile, a parity check.

The merge is `python -m mlx_lm fuse` in a child process, into a temporary folder that replaces
the output only once everything passed: the merge, the optional GGUF export (`gguf_export`, for
the Qwen2/Qwen3 and Llama/Mistral families; another model is refused before anything runs), the
Modelfile and the parity check, which generates greedy answers from base+adapter and from the
fused model and fails, leaving no output, if any answer differs.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from punie.backends.base import FuseResult
from punie.errors import BackendError
from punie.fsio import atomic_dir, atomic_file, read_jsonl
from punie.model.resolve import resolve_model
from punie.proc import child_process, python_module
from punie.train import runs
from punie.train.config import TrainConfig
from punie.train.gguf_export import QUANTS, check_exportable, write_gguf
from punie.train.rundir import ADAPTER_WEIGHTS, RunDir, adapter_weights, has_adapter

GGUF_FILE = "model.gguf"
PARITY_PROMPTS = 3
PARITY_MAX_TOKENS = 48
_FALLBACK_PROMPTS = (
    [{"role": "user", "content": "List the files in the current folder."}],
    [{"role": "user", "content": "What does this project do?"}],
    [{"role": "user", "content": "Search the code for TODO."}],
)


def adapter_folder(run_dir: Path, checkpoint: str) -> Path:
    if checkpoint not in ("best", "final"):
        raise BackendError(f"--checkpoint: {checkpoint!r} is not one of best, final")
    run = RunDir(run_dir)
    best = run.best_adapter()
    if checkpoint == "best" and best:
        return best
    if not has_adapter(run.adapter):
        raise BackendError(f"{run_dir}: has no adapter yet ({ADAPTER_WEIGHTS})")
    return run.adapter


def model_type(model_dir: Path) -> str:
    return json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("model_type", "")


def fuse_command(model: Path, adapter: Path, out: Path, dequantize: bool) -> list[str]:
    cmd = python_module(
        "mlx_lm", "fuse", "--model", str(model), "--adapter-path", str(adapter),
        "--save-path", str(out),
    )  # fmt: skip
    if dequantize:
        cmd.append("--dequantize")
    return cmd


def check_gguf(base: Path, gguf: str | None, dequantize: bool) -> None:
    """Refuse, before anything runs, a GGUF export that cannot be written."""
    if gguf is None:
        return
    if gguf not in QUANTS:
        raise BackendError(f"--gguf: {gguf!r} is not one of {', '.join(QUANTS)}")
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    if ("quantization" in config or "quantization_config" in config) and not dequantize:
        raise BackendError(
            f"--gguf: {base.name} is quantized; add --dequantize to export its fused weights"
        )
    check_exportable(base)


def parity_prompts(data: Path, n: int = PARITY_PROMPTS) -> list[dict[str, Any]]:
    """The first chat rows of the run's valid (or train) split, cut before the first answer."""
    prompts = []
    for split in ("valid", "train"):
        path = data / f"{split}.jsonl"
        if not path.is_file():
            continue
        for _, row in read_jsonl(path):
            messages = row.get("messages") or []
            first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), None)
            if first:
                prompts.append({"messages": messages[:first], "tools": row.get("tools")})
            if len(prompts) >= n:
                return prompts
    return prompts or [{"messages": m} for m in _FALLBACK_PROMPTS]


def check_parity(
    base: Path, adapter: Path, fused: Path, prompts: list[dict], log: Path
) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="punie-parity-") as tmp:
        spec, result = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec.write_text(
            json.dumps(
                {
                    "base": str(base),
                    "adapter": str(adapter),
                    "fused": str(fused),
                    "prompts": prompts,
                    "max_tokens": PARITY_MAX_TOKENS,
                }
            )
        )
        cmd = python_module("punie.train.parity", str(spec), str(result))
        with child_process(cmd, log=log) as proc:
            code = proc.wait()
        if code != 0:
            raise BackendError(f"parity check: generation failed with code {code} (log: {log})")
        answers = json.loads(result.read_text())
    rows = [
        {"prompt": i, "adapted": a, "fused": f, "same": a == f}
        for i, (a, f) in enumerate(zip(answers["adapted"], answers["fused"], strict=True))
    ]
    for row in rows:
        if not row["same"]:
            raise BackendError(
                f"parity check failed: prompt {row['prompt']}: base+adapter answered "
                f"{row['adapted'][:60]!r} but the fused model answered {row['fused'][:60]!r}; "
                "the fused weights do not reproduce the adapter (quantized base? try --dequantize)"
            )
    return rows


def modelfile(model_dir: Path, run: str, gguf: bool) -> str:
    """An Ollama Modelfile. Ollama templates are Go templates, not Jinja, so the model's own chat
    template is rewritten for the families Punie knows: Qwen2.5/Qwen3's (tools as JSON in
    <tools>, calls in <tool_call>, results in <tool_response>), Punie's tiny model's (one line a
    tool) and plain ChatML. Others rely on the template Ollama derives from the chat template in
    the model's metadata (the GGUF carries it)."""
    source = f"./{GGUF_FILE}" if gguf else "."
    lines = [f"# Ollama Modelfile written by `punie fuse` for run {run}", f"FROM {source}"]
    template = _chat_template(model_dir)
    go_template = _go_template(template)
    if go_template:
        lines += [f'TEMPLATE """{go_template}"""', 'PARAMETER stop "<|im_end|>"']
    else:
        lines.append("# Chat template: taken by Ollama from the model's metadata.")
    lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"


def _chat_template(model_dir: Path) -> str:
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    try:
        cfg = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ""
    template = cfg.get("chat_template") or ""
    return template if isinstance(template, str) else json.dumps(template)


def _go_template(template: str) -> str | None:
    if QWEN_TOOLS_MARKER in template:
        return _QWEN_TEMPLATE
    if TINY_TOOLS_MARKER in template:
        return _TINY_TEMPLATE
    if "<|im_start|>" in template:
        return _CHATML_TEMPLATE
    return None


# Qwen2.5's and Qwen3's chat templates say this before the tool list; Punie's tiny model's template
# writes one line a tool (`name(param: type, optional?): description`).
QWEN_TOOLS_MARKER = "You are provided with function signatures within <tools></tools> XML tags"
TINY_TOOLS_MARKER = "One line a tool, `name(param: type, ...): description`"

# Qwen2.5's template in Go: Ollama hands `.Function` to the template as JSON, as Qwen's template's
# `tool | tojson` writes it.
_QWEN_TEMPLATE = """{{- if or .System .Tools }}<|im_start|>system
{{ if .System }}{{ .System }}{{ else if .Tools }}\
You are Qwen, created by Alibaba Cloud. You are a helpful assistant.{{ end }}
{{- if .Tools }}

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "assistant" }}<|im_start|>assistant
{{- if .Content }}
{{ .Content }}
{{- end }}
{{- range .ToolCalls }}
<tool_call>
{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
</tool_call>
{{- end }}<|im_end|>
{{ else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ else }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}"""

# Punie's tiny template in Go. Go templates range over a map in key order, so parameters come out
# sorted by name where the Jinja template keeps the schema's order.
_TINY_TEMPLATE = """<|im_start|>system
{{ if .System }}{{ .System }}{{ else }}You are a helpful assistant.{{ end }}
{{- if .Tools }}

# Tools
{{- range .Tools }}
{{ .Function.Name }}(
{{- $fn := .Function }}{{ $first := true }}
{{- range $name, $spec := .Function.Parameters.Properties }}
{{- if not $first }}, {{ end }}{{ $first = false }}{{ $name }}: {{ or $spec.Type "any" }}
{{- $optional := true }}{{ range $fn.Parameters.Required }}{{ if eq . $name }}\
{{ $optional = false }}{{ end }}{{ end }}{{ if $optional }}?{{ end }}
{{- end }})
{{- if .Function.Description }}: {{ .Function.Description }}{{ end }}
{{- end }}
{{- end }}<|im_end|>
{{ range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "system" }}
{{- else if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}
{{- range $j, $call := .ToolCalls }}{{ if or $.Content $j }}
{{ end }}<tool_call>
{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
</tool_call>
{{- end }}<|im_end|>
{{ else }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}"""

# ChatML with <tool_call> blocks, in Ollama's Go template language.
_CHATML_TEMPLATE = """{{- if or .System .Tools }}<|im_start|>system
{{ if .System }}{{ .System }}{{ else }}You are a helpful assistant.{{ end }}
{{- if .Tools }}

# Tools
Call a tool by writing <tool_call>{"name": ..., "arguments": {...}}</tool_call>. Available tools:
<tools>
{{- range .Tools }}
{{ .Function }}
{{- end }}
</tools>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}
{{- range .ToolCalls }}<tool_call>
{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
</tool_call>
{{- end }}<|im_end|>
{{ else }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}"""


def fuse_run(
    run_dir: Path,
    out: Path,
    *,
    checkpoint: str = "best",
    dequantize: bool = False,
    gguf: str | None = None,
    parity: bool = True,
) -> FuseResult:
    """`gguf`: also write `model.gguf`, its matrices "f16" or "q8_0"."""
    run_dir, out = Path(run_dir), Path(out)
    record = runs.load_record(run_dir)
    config = TrainConfig.load(RunDir(run_dir).config)
    adapter = adapter_folder(run_dir, checkpoint)
    base = resolve_model(config.model)
    check_gguf(base, gguf, dequantize)
    log = out.parent / f".{out.name}.fuse.log"
    with atomic_dir(out, kind="model") as tmp:
        with child_process(fuse_command(base, adapter, tmp, dequantize), log=log) as proc:
            code = proc.wait()
        if code != 0:
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-2:])
            raise BackendError(f"mlx_lm fuse exited with code {code}: {tail} (log: {log})")
        if gguf:
            write_gguf(tmp, tmp / GGUF_FILE, gguf, name=f"{model_type(base)}-{run_dir.name}")
        with atomic_file(tmp / "Modelfile") as f:
            f.write(modelfile(base, record.get("name", run_dir.name), bool(gguf)))
        checked = []
        if parity:
            prompts = parity_prompts(Path(config.data))
            checked = check_parity(base, adapter, tmp, prompts, log)
        runs_info = {
            "run": str(run_dir),
            "adapter": str(adapter),
            "adapter_sha256": runs.file_sha256(adapter_weights(adapter)),
            "dequantize": dequantize,
            "gguf": gguf,
            "parity": checked,
        }
        with atomic_file(tmp / "punie_fuse.json") as f:
            json.dump(runs_info, f, indent=2)
    log.unlink(missing_ok=True)
    return FuseResult(
        out=out,
        run=record.get("name", run_dir.name),
        adapter=adapter,
        gguf=out / GGUF_FILE if gguf else None,
        modelfile=out / "Modelfile",
        parity=checked,
    )
