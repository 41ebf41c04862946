"""Miner command line: run the validator's own admission checks before committing.

    python miner.py check --model <org/name[@revision] | local dir> --teacher <org/name[@revision] | local dir> [--json]

Exit status: 0 admissible, 1 not admissible, 2 usage error or a transient
store failure (try again later). Subcommands are one function each.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.admission import Admitted, Rejected, TeacherSpec, check_model
from eval.errors import KlhillError, TransientError
from eval.hashing import HashingError, content_hash
from eval.rules import DEFAULT_RULES, ContestRules
from eval.stores import DefiniteStoreError, LocalHub, ModelStore

EXIT_OK, EXIT_NOT_ADMISSIBLE, EXIT_USAGE = 0, 1, 2

HINTS = {
    "format": "commit as org/name@<40-hex commit id>; branch names and short SHAs move and are refused",
    "availability": "make the repo public and push the revision you commit; gated or deleted repos are refused",
    "files": "keep only config/generation_config, *.safetensors (+ index), tokenizer files, README, license",
    "config": "config.json must be a plain JSON object without auto_map; save it with save_pretrained",
    "architecture": "use an allowed architecture (see the contest rules)",
    "vocab": "keep the teacher's vocabulary size (top level and text_config)",
    "quantization": "upload unquantized F32/BF16/F16 weights and drop quantization_config",
    "tokenizer": "copy the teacher's tokenizer files unchanged",
    "chat_template": "copy the teacher's chat template unchanged",
    "safetensors": "re-save the weights with safetensors (save_pretrained); the header is malformed",
    "dtype": "cast the weights to BF16, F16 or F32",
    "params": "the model is larger than the contest allows: count every shard, including experts",
    "embedding": "the embedding and lm_head must have exactly vocab_size rows",
}


class UsageError(KlhillError):
    """A bad command line or an unreadable teacher: nothing was checked."""


def _store_for(args: argparse.Namespace) -> ModelStore:
    if args.hub_dir:
        return LocalHub(args.hub_dir)
    from eval.hf_store import HuggingFaceStore  # imported lazily: only the hub path needs it

    return HuggingFaceStore(endpoint=args.hf_endpoint)


def _split_ref(spec: str, store: ModelStore) -> tuple[str, str]:
    """``org/name@rev`` -> (repo, rev); without ``@`` the store resolves ``main`` to a commit id."""
    repo, sep, rev = spec.partition("@")
    return (repo, rev) if sep else (repo, store.resolve(repo, "main"))


def _local_dir_ref(path: Path) -> tuple[LocalHub, str, str]:
    """View a local model directory as a one-revision LocalHub (no copy: the revision dir is a link to it)."""
    root = Path(tempfile.mkdtemp(prefix="klhill-check-"))
    rev = hashlib.sha1(str(path.resolve()).encode()).hexdigest()
    (root / "local" / "model").mkdir(parents=True)
    (root / "local" / "model" / rev).symlink_to(path.resolve(), target_is_directory=True)
    return LocalHub(root), "local/model", rev


def _teacher(spec: str, args: argparse.Namespace) -> TeacherSpec:
    try:
        if Path(spec).is_dir():
            return TeacherSpec.from_dir(spec)
        store = _store_for(args)
        repo, rev = _split_ref(spec, store)
        return TeacherSpec.from_store(store, repo, rev)
    except TransientError:
        raise
    except (OSError, ValueError, KlhillError) as exc:
        raise UsageError(f"cannot read the teacher {spec!r}: {exc}") from exc


def _report(args: argparse.Namespace, result: dict[str, Any], where: str) -> None:
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return
    if result["ok"]:
        print(f"ADMISSIBLE {where}: {result['params']:,} parameters. {result['detail']}")
        if result["content_hash"]:
            print(f"content hash: {result['content_hash']}")
    else:
        label = result["reason"] or "NOT CHECKED"
        print(f"{label} {where} [{result['check']}]: {result['detail']}")
        if result["check"] in HINTS:
            print(f"to fix: {HINTS[result['check']]}")


def _result(ok: bool, reason: str | None, check: str | None, detail: str, params: int | None, chash: str | None):
    return {"ok": ok, "reason": reason, "check": check, "detail": detail, "params": params, "content_hash": chash}


def cmd_check(args: argparse.Namespace, rules: ContestRules = DEFAULT_RULES) -> int:
    """Admission exactly as the validator runs it; the teacher replaces the rules' vocab and tokenizer."""
    try:
        teacher = _teacher(args.teacher, args)
        rules = rules.model_copy(update={"vocab_size": teacher.vocab_size})
        local = Path(args.model).is_dir()
        if local:
            store, repo, rev = _local_dir_ref(Path(args.model))
        else:
            store = _store_for(args)
            repo, rev = _split_ref(args.model, store)
        verdict = check_model(store, repo, rev, rules, teacher)
    except UsageError as exc:
        _report(args, _result(False, None, "usage", str(exc), None, None), args.model)
        return EXIT_USAGE
    except TransientError as exc:
        _report(args, _result(False, None, "transient", f"store unavailable, try again later: {exc}", None, None), "")
        return EXIT_USAGE
    except DefiniteStoreError as exc:  # resolving 'main' of a missing repo
        _report(args, _result(False, "INVALID", "availability", str(exc), None, None), args.model)
        return EXIT_NOT_ADMISSIBLE
    where = args.model if local else f"{repo}@{rev}"
    if isinstance(verdict, Rejected):
        _report(args, _result(False, verdict.reason, verdict.check, verdict.detail, None, None), where)
        return EXIT_NOT_ADMISSIBLE
    assert isinstance(verdict, Admitted)
    chash = None
    if local:
        try:
            chash = content_hash(Path(args.model))
        except (HashingError, KlhillError) as exc:
            _report(args, _result(False, "INVALID", "safetensors", str(exc), None, None), where)
            return EXIT_NOT_ADMISSIBLE
    detail = f"metadata hash {verdict.metadata_hash}; revision {rev}" if not local else "local directory"
    _report(args, _result(True, None, None, detail, verdict.params, chash), where)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="miner.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="run the admission checks on a model before committing it")
    check.add_argument("--model", required=True, help="org/name[@revision] or a local model directory")
    check.add_argument("--teacher", required=True, help="org/name[@revision] or a local directory")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument("--hub-dir", type=Path, default=None, help="use a local hub root instead of Hugging Face")
    check.add_argument("--hf-endpoint", default=None, help="Hugging Face endpoint URL (default: the public hub)")
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help exits 0, usage errors exit 2
        return int(exc.code or 0)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
