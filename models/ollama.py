"""An Ollama `Modelfile` for exported GGUF files: FROM the model file, ADAPTER for a LoRA, the chat template in
Ollama's Go-template form, the system prompt and the stop tokens.

Ollama renders prompts with Go templates, not Jinja; the two chat formats the app's Llama-family models use
(ChatML, as SmolLM2 and Qwen2 write it, and Llama 3's header tokens) are written out here. For any other template
the Modelfile has no TEMPLATE line and Ollama takes the chat template stored in the GGUF file itself.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ChatFormat:
    marker: str  # a token only this format's Jinja template contains
    template: str  # the same conversation as an Ollama Go template (.Messages holds the system message too)
    stops: tuple[str, ...]


FORMATS = (
    ChatFormat("<|im_start|>",
               "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
               "<|im_start|>assistant\n",
               ("<|im_end|>", "<|im_start|>")),
    ChatFormat("<|start_header_id|>",
               "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
               "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
               ("<|eot_id|>", "<|start_header_id|>")),
)


def chat_format(chat_template: str | None) -> ChatFormat | None:
    """The known chat format a Jinja chat template writes, or None."""
    return next((f for f in FORMATS if chat_template and f.marker in chat_template), None)


def implied_system(tokenizer, chat_template: str | None) -> str:
    """The system prompt a ChatML template writes by itself into a conversation without one (SmolLM2's does): the
    app's prompts hold it, so the Modelfile's SYSTEM must too (Ollama's .Messages would lack it)."""
    if chat_format(chat_template) is not FORMATS[0]:
        return ""
    from jinja2 import TemplateError

    try:
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": "?"}], tokenize=False,
                                                 chat_template=chat_template)
    except (TemplateError, ValueError, TypeError):  # a template that cannot render alone: no default to keep
        return ""
    found = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", rendered if isinstance(rendered, str) else "", re.S)
    return found.group(1) if found else ""


def _quoted(text: str) -> str:
    # A Modelfile value in triple quotes ends at the next three quotes: the text never holds three in a row, nor
    # ends in one (it would run into the closing three).
    body = text.replace('"""', '" " "')
    return '"""' + body + (" " if body.endswith('"') else "") + '"""'


def modelfile(model_file: str, adapter_file: str | None, chat_template: str | None, system_prompt: str,
              eos_token: str | None) -> str:
    """The Modelfile text for `ollama create NAME -f Modelfile`, next to the GGUF files it names."""
    found = chat_format(chat_template)
    lines = ["# Made by LoRA Studio. Create the model with:  ollama create my-model -f Modelfile",
             f"FROM ./{model_file}"]
    if adapter_file:
        lines.append(f"ADAPTER ./{adapter_file}")
    if found is not None:
        lines.append(f"TEMPLATE {_quoted(found.template)}")
    else:
        lines.append("# No TEMPLATE: Ollama uses the chat template stored in the GGUF file.")
    if system_prompt.strip():
        lines.append(f"SYSTEM {_quoted(system_prompt.strip())}")
    stops = list(found.stops if found else ()) + ([eos_token] if eos_token else [])
    for stop in dict.fromkeys(stops):
        lines.append('PARAMETER stop "' + stop.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "\n".join(lines) + "\n"


def card(name: str, model_file: str, adapter_file: str | None, quantization: str, base: str) -> str:
    """The README.md of a GGUF export: what the files are and how to run them in llama.cpp and Ollama."""
    what = (f"the chat adapter **{name}** as a GGUF LoRA (`{adapter_file}`) and its base model `{base}` as GGUF "
            f"(`{model_file}`, {quantization})" if adapter_file else
            f"the model **{name}** (made from `{base}`) as one GGUF file (`{model_file}`, {quantization})")
    lora = f" --lora {adapter_file}" if adapter_file else ""
    return "\n".join([
        f"# {name} for llama.cpp and Ollama", "",
        f"Made with LoRA Studio: {what}, an Ollama `Modelfile` and this card.", "",
        "f16 keeps the weights as they are (half precision); q8_0 is about half the size and answers almost the "
        "same; q4_0 is smaller still and answers a little differently.", "",
        "## Ollama", "", "```bash", "ollama create my-model -f Modelfile", "ollama run my-model", "```", "",
        "## llama.cpp", "", "```bash", f"llama-cli -m {model_file}{lora} -cnv", "```", "",
        f"`llama-server -m {model_file}{lora}` serves it with an OpenAI-compatible API.", ""])


def write_zip(folder: Path, target: Path) -> Path:
    """A zip at target of folder's files under folder's name, written to a temporary name and renamed into place;
    GGUF files are stored as they are (quantized weights hardly compress, and deflating them takes minutes)."""
    tmp = target.with_name(f".{target.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as bundle:
        for file in sorted(folder.iterdir()):
            bundle.write(file, f"{folder.name}/{file.name}",
                         compress_type=zipfile.ZIP_STORED if file.suffix == ".gguf" else zipfile.ZIP_DEFLATED)
    tmp.replace(target)
    return target
