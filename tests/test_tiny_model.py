import hashlib

from punie.data.sample import TOOLS
from punie.model.tiny import TinyShape, build_tiny_model

CALL = {"type": "function", "function": {"name": "read_file", "arguments": {"path": "a.py"}}}
CONVERSATION = [
    {"role": "system", "content": "You are Punie."},
    {"role": "user", "content": "Show me a.py"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "content": "print(1)"},
    {"role": "assistant", "content": "It prints 1."},
]


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_builds_byte_identical_model(tmp_path, tiny_model):
    again = build_tiny_model(tmp_path / "again", seed=0)
    assert _digests(again) == _digests(tiny_model)


def test_other_seed_changes_only_the_weights(tmp_path, tiny_model):
    other = build_tiny_model(tmp_path / "other", seed=1)
    a, b = _digests(tiny_model), _digests(other)
    assert a["model.safetensors"] != b["model.safetensors"]
    assert a["tokenizer.json"] == b["tokenizer.json"]


def test_loads_and_generates_in_mlx_lm(tiny_model):
    from mlx_lm import generate, load

    model, tokenizer = load(str(tiny_model))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    text = generate(model, tokenizer, prompt, max_tokens=8)
    assert isinstance(text, str) and len(tokenizer.encode(text)) >= 1
    assert tokenizer.has_tool_calling and tokenizer.tool_call_start == "<tool_call>"


def test_a_widened_shape_scales_its_mlp_and_loads_in_mlx_lm(tmp_path):
    import json

    from mlx_lm import generate, load

    shape = TinyShape(num_hidden_layers=2).widened(256)
    assert (shape.hidden_size, shape.intermediate_size, shape.num_hidden_layers) == (256, 704, 2)
    folder = build_tiny_model(tmp_path / "wide", seed=0, shape=shape)
    config = json.loads((folder / "config.json").read_text())
    assert (config["hidden_size"], config["intermediate_size"]) == (256, 704)
    model, tokenizer = load(str(folder))
    assert len(model.layers) == 2
    assert isinstance(generate(model, tokenizer, "hi", max_tokens=2), str)


def test_loads_and_generates_in_transformers(tiny_model):
    torch = __import__("pytest").importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert torch.isfinite(model(**ids).logits).all()


def test_transformers_tokenizer_matches_mlx_lm(tiny_model):
    from mlx_lm import load
    from transformers import AutoTokenizer

    _, mlx_tok = load(str(tiny_model))
    hf_tok = AutoTokenizer.from_pretrained(tiny_model)
    a = mlx_tok.apply_chat_template(CONVERSATION, tools=TOOLS, tokenize=False)
    b = hf_tok.apply_chat_template(CONVERSATION, tools=TOOLS, tokenize=False)
    assert a == b
    assert hf_tok.encode(b) == mlx_tok.encode(a)


def test_chat_template_renders_tools_and_tool_calls(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    text = tok.apply_chat_template(CONVERSATION, tools=TOOLS, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are Punie.\n\n# Tools")
    assert "\n# Tools\nread_file(path: string): Read a text file.\n" in text
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "read_file", "arguments": {"path": "a.py"}}'
        "\n</tool_call><|im_end|>" in text
    )
    assert "<|im_start|>tool\nprint(1)<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\nIt prints 1.<|im_end|>\n")


def test_generation_prompt_is_a_prefix_of_the_rendered_answer(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompt = tok.apply_chat_template(
        CONVERSATION[:2], tools=TOOLS, add_generation_prompt=True, tokenize=False
    )
    full = tok.apply_chat_template(CONVERSATION[:3], tools=TOOLS, tokenize=False)
    assert full.startswith(prompt)


def test_tool_call_markers_are_single_tokens(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    for marker in ("<tool_call>", "</tool_call>", "<|im_end|>"):
        assert len(tok.encode(marker, add_special_tokens=False)) == 1
    ids = tok.encode("<tool_call>x</tool_call>", add_special_tokens=False)
    assert tok.decode(ids) == "<tool_call>x</tool_call>"
