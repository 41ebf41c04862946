"""Admission: is a submission worth GPU time? Decided from metadata and headers only.

The validator, the pod and ``miner.py check`` all call ``check_model``, so a
miner sees exactly the verdict the validator will reach. Every check fails
closed (LESSONS 10) except on a ``TransientError``, which propagates: an outage
is "ask again later", never a disqualification (LESSONS 21).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eval.hashing import metadata_hash
from eval.model_store.port import (
    DefiniteStoreError,
    FileInfo,
    ModelStore,
    UnsafeRepoContent,
    validate_repo,
    validate_revision,
)
from eval.model_store.safetensors_header import HeaderError, SafetensorsHeader
from eval.repo_policy import (
    CHAT_TEMPLATE_FILES,
    MAX_CONFIG_BYTES,
    MAX_INDEX_BYTES,
    MAX_TOKENIZER_BYTES,
    QUANT_MARKERS,
    TOKENIZER_FILES,
    Reject,
    check_file_list,
    check_no_forbidden_keys,
    parse_json_object,
)
from eval.rules import ContestRules


@dataclass(frozen=True)
class TeacherSpec:
    """What a student must match: vocabulary width and byte-identical tokenizer files."""

    vocab_size: int
    tokenizer_sha256: dict[str, str]
    chat_template_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.vocab_size < 1:  # a misconfigured teacher must not become the contest's vocabulary rule
            raise ValueError(f"the teacher's vocab_size must be a positive integer, got {self.vocab_size}")

    @classmethod
    def from_dir(cls, path: Path | str) -> TeacherSpec:
        path = Path(path)
        config = parse_json_object((path / "config.json").read_bytes(), "config.json")
        shas = {
            name: hashlib.sha256((path / name).read_bytes()).hexdigest()
            for name in sorted(TOKENIZER_FILES)
            if (path / name).is_file()
        }
        return cls(_vocab_sizes(config)[0], shas, _chat_template_sha(lambda n: (path / n).read_bytes(), shas))

    @classmethod
    def from_store(cls, store: ModelStore, repo: str, revision: str) -> TeacherSpec:
        files = {f.path: f for f in store.files(repo, revision)}
        config = parse_json_object(store.read_file(repo, revision, "config.json", MAX_CONFIG_BYTES), "config.json")
        shas = {name: _file_sha(store, repo, revision, files[name]) for name in sorted(TOKENIZER_FILES & set(files))}
        read = lambda n: store.read_file(repo, revision, n, MAX_TOKENIZER_BYTES)  # noqa: E731
        return cls(_vocab_sizes(config)[0], shas, _chat_template_sha(read, shas))


@dataclass(frozen=True)
class Admitted:
    params: int
    metadata_hash: str
    files: list[FileInfo]
    architectures: list[str] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=list)
    shards: int = 0


@dataclass(frozen=True)
class Rejected:
    reason: Literal["INVALID", "REMOVED"]
    check: str
    detail: str


def check_model(
    store: ModelStore,
    repo: str,
    revision: str,
    rules: ContestRules,
    teacher: TeacherSpec,
    *,
    existed_before: bool = False,
) -> Admitted | Rejected:
    """Run every admission check in order; the first failure is the verdict."""
    try:
        validate_repo(repo)
        validate_revision(revision)
    except ValueError as exc:
        return Rejected("INVALID", "format", str(exc))
    try:
        try:
            files = store.files(repo, revision)
        except UnsafeRepoContent:
            raise
        except DefiniteStoreError as exc:
            reason: Literal["INVALID", "REMOVED"] = "REMOVED" if existed_before else "INVALID"
            return Rejected(reason, "availability", f"{type(exc).__name__}: {exc}")
        return _check_files_and_content(store, repo, revision, rules, teacher, files)
    except Reject as rej:
        return Rejected("INVALID", rej.check, rej.detail)
    except UnsafeRepoContent as exc:
        return Rejected("INVALID", "files", str(exc))
    except HeaderError as exc:
        return Rejected("INVALID", "safetensors", str(exc))
    except DefiniteStoreError as exc:  # a file vanished or became inaccessible mid-check
        return Rejected("REMOVED" if existed_before else "INVALID", "availability", f"{type(exc).__name__}: {exc}")


def _check_files_and_content(
    store: ModelStore, repo: str, revision: str, rules: ContestRules, teacher: TeacherSpec, files: list[FileInfo]
) -> Admitted:
    by_path = check_file_list(files)
    shards = sorted(p for p in by_path if p.endswith(".safetensors"))
    config = parse_json_object(store.read_file(repo, revision, "config.json", MAX_CONFIG_BYTES), "config.json")
    architectures = _check_config(config, rules, teacher)
    if "generation_config.json" in by_path:
        raw = store.read_file(repo, revision, "generation_config.json", MAX_CONFIG_BYTES)
        check_no_forbidden_keys(parse_json_object(raw, "generation_config.json"), "generation_config.json")
    _check_tokenizer(store, repo, revision, by_path, teacher)
    headers = {p: store.safetensors_header(repo, revision, p) for p in shards}
    if "model.safetensors.index.json" in by_path:
        raw = store.read_file(repo, revision, "model.safetensors.index.json", MAX_INDEX_BYTES)
        _check_index(parse_json_object(raw, "model.safetensors.index.json"), headers)
    params, dtypes = _check_tensors(headers, rules, teacher)
    unhashed = [p for p in shards if not by_path[p].sha256]
    if unhashed:  # e.g. a hub file kept out of LFS: without its sha256 no copy can be detected before download
        raise Reject("files", f"{unhashed[0]} has no sha256 in the store's metadata: store *.safetensors with LFS")
    return Admitted(params, metadata_hash(files), files, architectures, dtypes, len(shards))


def _vocab_sizes(config: dict[str, Any]) -> list[int]:
    sizes = [c["vocab_size"] for c in (config, config.get("text_config")) if isinstance(c, dict) and "vocab_size" in c]
    if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        raise Reject("config", "config.json has no integer vocab_size (top level or text_config)")
    return sizes


def _check_config(config: dict[str, Any], rules: ContestRules, teacher: TeacherSpec) -> list[str]:
    check_no_forbidden_keys(config, "config.json")
    if "text_config" in config and not isinstance(config["text_config"], dict):  # the loader would fail on the pod
        raise Reject("config", "config.json's text_config must be a JSON object")
    archs = config.get("architectures")
    if not isinstance(archs, list) or not archs or not all(isinstance(a, str) for a in archs):
        raise Reject("config", "config.json needs an 'architectures' list of strings")
    bad = [a for a in archs if a not in rules.allowed_architectures]
    if bad:
        raise Reject("architecture", f"architecture {bad[0]!r} not allowed (allowed: {rules.allowed_architectures})")
    for size in _vocab_sizes(config):
        if size != teacher.vocab_size:
            raise Reject("vocab", f"vocab_size {size} differs from the teacher's {teacher.vocab_size}")
    return archs


def _file_sha(store: ModelStore, repo: str, revision: str, info: FileInfo) -> str:
    if info.sha256:
        return info.sha256
    return hashlib.sha256(store.read_file(repo, revision, info.path, MAX_TOKENIZER_BYTES)).hexdigest()


def _check_tokenizer(
    store: ModelStore, repo: str, revision: str, by_path: dict[str, FileInfo], teacher: TeacherSpec
) -> None:
    mine = sorted(TOKENIZER_FILES & set(by_path))
    theirs = sorted(teacher.tokenizer_sha256)
    if not theirs:
        raise Reject("tokenizer", "the teacher has no tokenizer files to compare against")
    if mine != theirs:
        raise Reject("tokenizer", f"tokenizer files {mine} differ from the teacher's {theirs}: copy them unchanged")
    shas = {name: _file_sha(store, repo, revision, by_path[name]) for name in mine}
    for name in mine:
        if shas[name] != teacher.tokenizer_sha256[name]:
            check = "tokenizer"
            if name in CHAT_TEMPLATE_FILES:  # name the chat template only when it is what differs
                read = lambda n: store.read_file(repo, revision, n, MAX_TOKENIZER_BYTES)  # noqa: E731
                try:
                    if _chat_template_sha(read, shas, strict=True) != teacher.chat_template_sha256:
                        check = "chat_template"
                except (ValueError, AttributeError, RecursionError):  # not even a JSON object: a tokenizer file
                    pass
            raise Reject(check, f"{name} is not byte-identical to the teacher's: copy the teacher's file unchanged")


def _chat_template_sha(read: Any, shas: dict[str, str], *, strict: bool = False) -> str | None:
    """A chat template's sha256 (own file first, else tokenizer_config's key); None when there is none."""
    for name in ("chat_template.jinja", "chat_template.json"):
        if name in shas:
            return shas[name]
    if "tokenizer_config.json" in shas:
        try:
            tpl = json.loads(read("tokenizer_config.json")).get("chat_template")
        except (ValueError, AttributeError, RecursionError):  # unparseable: no template (strict: say so)
            if strict:
                raise
            return None
        if tpl is not None:
            return hashlib.sha256(json.dumps(tpl, sort_keys=True).encode()).hexdigest()
    return None


def _check_index(index: dict[str, Any], headers: dict[str, SafetensorsHeader]) -> None:
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise Reject("safetensors", "model.safetensors.index.json has no weight_map object")
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or shard not in headers or name not in headers[shard].tensors:
            where = repr(shard)[:100]  # a hostile index may map to anything, of any size
            raise Reject("safetensors", f"index maps {name[:200]!r} to {where}, which does not hold it")


def _check_tensors(
    headers: dict[str, SafetensorsHeader], rules: ContestRules, teacher: TeacherSpec
) -> tuple[int, list[str]]:
    seen: set[str] = set()
    params = 0
    dtypes: set[str] = set()
    for shard, header in sorted(headers.items()):
        for name, t in header.tensors.items():
            if name in seen:
                raise Reject("safetensors", f"tensor {name!r} appears in more than one shard")
            seen.add(name)
            if t.dtype not in rules.allowed_dtypes:
                raise Reject("dtype", f"{shard}: tensor {name!r} has dtype {t.dtype} (allowed: {rules.allowed_dtypes})")
            parts = name.split(".")
            if QUANT_MARKERS & set(parts) or any("quant_state" in p for p in parts):
                raise Reject("quantization", f"{shard}: tensor {name!r} is a quantization marker")
            if name.endswith(("embed_tokens.weight", "lm_head.weight")) and (
                len(t.shape) != 2 or t.shape[0] != teacher.vocab_size
            ):
                raise Reject("embedding", f"{name!r} has shape {list(t.shape)}; expected [{teacher.vocab_size}, H]")
            params += t.numel
            dtypes.add(t.dtype)
    if not any(n.endswith("embed_tokens.weight") for n in seen):
        raise Reject("embedding", "no embed_tokens.weight tensor found")
    if params > rules.max_params:
        raise Reject("params", f"{params:,} parameters across all shards exceed the limit of {rules.max_params:,}")
    return params, sorted(dtypes)
