"""What a submission's repo may hold, and how its JSON is read: the file policy of admission.

Only safetensors shards, JSON configs and the teacher's tokenizer files are allowed; anything
that could run code (``.py``, pickles, ``auto_map``) or hide a teacher or a quantization is refused
(LESSONS 7, 8, 9). JSON is read bounded in size by the caller and in depth here, so a hostile config cannot
exhaust the validator. ``eval.admission`` runs these checks in order with the rest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from eval.errors import KlhillError
from eval.model_store.port import FileInfo

TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.model",
        "chat_template.jinja",
        "chat_template.json",
    }
)
CHAT_TEMPLATE_FILES = frozenset({"chat_template.jinja", "chat_template.json", "tokenizer_config.json"})
OTHER_ALLOWED = frozenset(
    {
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        "README.md",
        ".gitattributes",
        "LICENSE",
        "LICENSE.txt",
        "LICENSE.md",
        "preprocessor_config.json",
        "video_preprocessor_config.json",
    }
)
SHARD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.safetensors$")
FORBIDDEN_SUFFIXES = (
    ".py",
    ".pyc",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".pkl",
    ".pickle",
    ".gguf",
    ".onnx",
    ".h5",
    ".msgpack",
    ".so",
    ".npy",
    ".npz",
    ".joblib",
    ".tflite",
    ".keras",
)
QUANT_MARKERS = frozenset(
    {
        "qweight",
        "qzeros",
        "scales",
        "g_idx",
        "absmax",
        "quant_map",
        "nested_absmax",
        "nested_quant_map",
        "SCB",
        "weight_scale",
        "weight_scale_inv",
        "weight_scale_2",
        "input_scale",
        "output_scale",
        "weight_zero_point",
        "weight_global_scale",
        "weight_packed",
        "weight_format",
        "quant_state",
    }
)

MAX_FILES = 256
MAX_SHARDS = 128
MAX_CONFIG_BYTES = 1 << 20
MAX_INDEX_BYTES = 32 << 20
MAX_TOKENIZER_BYTES = 64 << 20
MAX_JSON_DEPTH = 32


class Reject(KlhillError):
    """One failed check: ``check`` names it (files, config, quantization, ...), ``detail`` says what to fix."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(detail)
        self.check, self.detail = check, detail


def check_file_list(files: list[FileInfo]) -> dict[str, FileInfo]:
    if len(files) > MAX_FILES:
        raise Reject("files", f"{len(files)} files in the repo (at most {MAX_FILES} allowed)")
    by_path = {f.path: f for f in files}
    for path in sorted(by_path):
        if path.lower().endswith(FORBIDDEN_SUFFIXES):
            raise Reject("files", f"forbidden file {path!r}: only safetensors, JSON configs and tokenizer files")
        if path not in TOKENIZER_FILES | OTHER_ALLOWED and not SHARD_RE.match(path):
            raise Reject("files", f"unexpected file {path!r}: remove it (allowed: configs, *.safetensors, tokenizer)")
    shards = [p for p in by_path if p.endswith(".safetensors")]
    if not shards:
        raise Reject("files", "no *.safetensors weights in the repo")
    if len(shards) > MAX_SHARDS:
        raise Reject("files", f"{len(shards)} safetensors shards (at most {MAX_SHARDS})")
    if "config.json" not in by_path:
        raise Reject("files", "config.json is missing")
    return by_path


def parse_json_object(raw: bytes, name: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise Reject("config", f"{name} is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise Reject("config", f"{name} is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise Reject("config", f"{name} must be a JSON object, got {type(doc).__name__}")
    for _ in walk_json(doc, name):
        pass
    return doc


def walk_json(doc: Any, name: str) -> Iterator[tuple[str, Any]]:
    """Yield every (key, value) pair at any depth; too deep a document is rejected, not recursed."""
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise Reject("config", f"{name} is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, dict):
            for k, v in node.items():
                yield k, v
                stack.append((v, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def check_no_forbidden_keys(doc: dict[str, Any], name: str) -> None:
    for key, _ in walk_json(doc, name):
        if key == "auto_map":
            raise Reject("config", f"{name} has auto_map (remote code is never run): remove it")
        if key in ("quantization_config", "quantization", "compression_config"):
            raise Reject("quantization", f"{name} has {key}: quantized models are not allowed")
