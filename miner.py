"""Miner command line: check a model, estimate its score, and commit it once.

    python miner.py check  --model <org/name[@revision] | dir> --teacher <org/name[@revision] | dir> [--json]
    python miner.py eval   --model <org/name@rev | dir> [--against <org/name@rev | dir>] [--block-hash 0x..] [--json]
    python miner.py commit --network finney --netuid N --wallet-name W --hotkey-name H --model-repo org/name

Exit status (``eval.exit_codes.ExitCode``): 0 success, 1 refused (not admissible, not
registered, already committed, model error), 2 no verdict: a usage error or a transient
failure (try again later), 3 (commit) submitted but not yet readable. Subcommands are one function each;
the commit flow lives in ``validator/chain/submit.py``, the eval flow in ``eval/estimate.py``.
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
from eval.errors import KlhillError, TransientError, UsageError
from eval.exit_codes import ExitCode
from eval.hashing import HashingError, content_hash
from eval.model_store.local import LocalHub
from eval.model_store.port import DefiniteStoreError, ModelStore
from eval.rules import DEFAULT_RULES, ContestRules

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
    "transient": "nothing is known to be wrong with the model: the model store did not answer; run check again later",
}
CHECK_EPILOG = """exit status: 0 admissible; 1 not admissible (reason INVALID or REMOVED, check names the
failed rule); 2 no verdict: a usage error (check "usage": fix the command line or the teacher)
or the model store was unreachable or overloaded (check "transient": try again later; an outage
never counts against a model). --json prints one object:
{"ok", "reason", "check", "detail", "params", "content_hash"}."""


def _store_for(args: argparse.Namespace) -> ModelStore:
    if args.hub_dir:
        return LocalHub(args.hub_dir)
    from eval.model_store.huggingface import HuggingFaceStore  # imported lazily: only the hub path needs it

    return HuggingFaceStore(endpoint=args.hf_endpoint)


def _split_ref(spec: str, store: ModelStore) -> tuple[str, str]:
    """``org/name@rev`` -> (repo, rev); without ``@`` the store resolves ``main`` to a commit id."""
    repo, sep, rev = spec.partition("@")
    return (repo, rev) if sep else (repo, store.resolve(repo, "main"))


def _looks_like_path(spec: str) -> bool:
    """A spec meant as a local path (a typo'd directory is a usage error, not a repo id to look up)."""
    return spec.startswith(("/", "./", "../", "~")) or spec in (".", "..") or Path(spec).exists()


def _local_dir_ref(path: Path, root: Path) -> tuple[LocalHub, str, str]:
    """View a local model directory as a one-revision LocalHub under ``root`` (no copy: a link to it)."""
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
        label = result["reason"] or ("TRY AGAIN LATER" if result["check"] == "transient" else "NOT CHECKED")
        print(f"{label} {where} [{result['check']}]: {result['detail']}")
        if result["check"] in HINTS:
            print(f"to fix: {HINTS[result['check']]}")


def _result(ok: bool, reason: str | None, check: str | None, detail: str, params: int | None, chash: str | None):
    return {"ok": ok, "reason": reason, "check": check, "detail": detail, "params": params, "content_hash": chash}


def cmd_check(args: argparse.Namespace, rules: ContestRules = DEFAULT_RULES) -> int:
    """Admission exactly as the validator runs it; the teacher replaces the rules' vocab and tokenizer."""
    # the link farm for a local directory is removed on every exit (rmtree unlinks the link, never follows it)
    with tempfile.TemporaryDirectory(prefix="klhill-check-") as scratch:
        return _check(args, rules, Path(scratch))


def _check(args: argparse.Namespace, rules: ContestRules, scratch: Path) -> int:
    try:
        teacher = _teacher(args.teacher, args)
        rules = rules.model_copy(update={"vocab_size": teacher.vocab_size})
        local = Path(args.model).is_dir()
        if not local and _looks_like_path(args.model):
            raise UsageError(f"{args.model!r} is not a model directory (and not an org/name repo id)")
        store: ModelStore
        if local:
            store, repo, rev = _local_dir_ref(Path(args.model), scratch)
        else:
            store = _store_for(args)
            repo, rev = _split_ref(args.model, store)
        verdict = check_model(store, repo, rev, rules, teacher)
    except UsageError as exc:
        _report(args, _result(False, None, "usage", str(exc), None, None), args.model)
        return ExitCode.NO_VERDICT
    except TransientError as exc:  # no verdict either way (LESSONS 21): exit 2, like a usage error, never 1
        _report(
            args,
            _result(False, None, "transient", f"store unavailable, try again later: {exc}", None, None),
            args.model,
        )
        return ExitCode.NO_VERDICT
    except ValueError as exc:  # not a directory and not a valid repo id: the format check's verdict
        _report(args, _result(False, "INVALID", "format", str(exc), None, None), args.model)
        return ExitCode.REFUSED
    except DefiniteStoreError as exc:  # resolving 'main' of a missing repo
        _report(args, _result(False, "INVALID", "availability", str(exc), None, None), args.model)
        return ExitCode.REFUSED
    where = args.model if local else f"{repo}@{rev}"
    if isinstance(verdict, Rejected):
        _report(args, _result(False, verdict.reason, verdict.check, verdict.detail, None, None), where)
        return ExitCode.REFUSED
    assert isinstance(verdict, Admitted)
    chash = None
    if local:
        try:
            chash = content_hash(Path(args.model))
        except (HashingError, KlhillError) as exc:
            _report(args, _result(False, "INVALID", "safetensors", str(exc), None, None), where)
            return ExitCode.REFUSED
    detail = f"metadata hash {verdict.metadata_hash}; revision {rev}" if not local else "local directory"
    _report(args, _result(True, None, None, detail, verdict.params, chash), where)
    return ExitCode.OK


def _default_teacher(rules: ContestRules = DEFAULT_RULES) -> str:
    return f"{rules.teacher_repo}@{rules.teacher_revision}" if rules.teacher_revision else rules.teacher_repo


def cmd_commit(args: argparse.Namespace) -> int:
    """Resolve, check, confirm and write this hotkey's one commitment (see ``validator.chain.submit``)."""
    from validator.chain import submit as mc
    from validator.chain.wallets import resolve_network

    options = mc.CommitOptions(
        network=resolve_network(args.network),
        model_repo=args.model_repo,
        dry_run=args.dry_run,
        yes=args.yes,
        wait=args.wait,
        poll_interval=args.poll_interval,
    )
    chain = None
    try:
        store = _store_for(args)
        revision = args.revision
        if revision is None:
            revision = store.resolve(args.model_repo, "main")
            print(f"revision: {args.model_repo} main is at {revision}")
        teacher = _teacher(args.teacher or _default_teacher(), args)
        wallet = mc.open_wallet(args.wallet_name, args.hotkey_name, args.wallet_path)
        chain, hotkey = mc.open_chain(options.network, args.netuid, wallet, args.sim_db)
        return mc.run_commit(options, store=store, teacher=teacher, chain=chain, hotkey=hotkey, revision=revision)
    except Exception as exc:
        mapped = mc.outcome(exc, args.model_repo)
        if mapped is None:
            raise
        print(mapped[1])
        return mapped[0]
    finally:
        if chain is not None and hasattr(chain, "close"):
            chain.close()


def cmd_eval(args: argparse.Namespace) -> int:
    """Score a model on a block hash's prompts with the pod routine (see ``eval.estimate``)."""
    from eval import estimate as me
    from eval.errors import InfraError

    request = me.EvalRequest(
        model=args.model,
        teacher=args.teacher,
        against=args.against,
        prompts=args.prompts,
        block_hash=args.block_hash,
        rules=args.rules,
        corpus=args.corpus,
        device=args.device,
        max_new_tokens=args.max_new_tokens,
        workdir=args.workdir,
        as_json=args.json,
    )
    try:
        return me.run_eval(request, lambda: _store_for(args))
    except (UsageError, ValueError, OSError) as exc:  # bad hash, rules file, corpus, prompt source
        print(f"USAGE: {exc}", file=sys.stderr)
        return ExitCode.NO_VERDICT
    except (InfraError, TransientError) as exc:
        print(f"COULD NOT EVALUATE (nothing is wrong with the model): {exc}", file=sys.stderr)
        return ExitCode.NO_VERDICT
    except (DefiniteStoreError, KlhillError) as exc:
        print(f"COULD NOT EVALUATE: {exc}", file=sys.stderr)
        return ExitCode.REFUSED


def _store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hub-dir", type=Path, default=None, help="use a local hub root instead of Hugging Face")
    p.add_argument("--hf-endpoint", default=None, help="Hugging Face endpoint URL (default: the public hub)")


def _add_commit(sub: Any) -> None:
    c = sub.add_parser("commit", help="commit a checked model for this hotkey (once: another would replace it)")
    c.add_argument("--network", default=None, help="finney | test | local | ws://... | sim (env BT_NETWORK)")
    c.add_argument("--sim-db", type=Path, default=None, help="SimChain file for --network sim")
    c.add_argument("--netuid", type=int, required=True)
    c.add_argument("--wallet-name", default=None, help="env BT_WALLET")
    c.add_argument("--hotkey-name", default=None, help="env BT_WALLET_HOTKEY")
    c.add_argument("--wallet-path", default=None, help="env BT_WALLET_PATH")
    c.add_argument("--model-repo", required=True, help="org/name on the model store")
    c.add_argument("--revision", default=None, help="40-hex commit SHA (default: the repo's current main)")
    c.add_argument("--teacher", default=None, help="org/name[@revision] or a local dir (default: the rules')")
    _store_flags(c)
    c.add_argument("--dry-run", action="store_true", help="run every check and show the commitment; write nothing")
    c.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    c.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the commitment to read back")
    c.add_argument("--poll-interval", type=float, default=3.0, help=argparse.SUPPRESS)
    c.set_defaults(func=cmd_commit)


def _add_eval(sub: Any) -> None:
    e = sub.add_parser("eval", help="estimate a model's KL locally with the validator's scoring code")
    e.add_argument("--model", required=True, help="org/name[@revision] or a local model directory")
    e.add_argument("--teacher", default=None, help="org/name[@revision] or a local dir (default: the rules')")
    e.add_argument("--against", default=None, help="the king to compare with: org/name[@revision] or a dir")
    e.add_argument("--prompts", type=int, default=None, help="number of prompts (default: the rules')")
    e.add_argument("--block-hash", default=None, help="0x + 64 hex: a past round's hash (default: random)")
    e.add_argument("--rules", type=Path, default=None, help="the round's ContestRules JSON (default: built-in)")
    e.add_argument("--corpus", default=None, help="prompt corpus dir or 'builtin' (default: FineWeb)")
    e.add_argument("--device", default=None, help="cuda | cpu | cuda:N (default: cuda when available)")
    e.add_argument("--max-new-tokens", type=int, default=None, help="shorter continuations for a quick run")
    e.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    _store_flags(e)
    e.set_defaults(func=cmd_eval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="miner.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "check",
        help="run the admission checks on a model before committing it",
        epilog=CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--model", required=True, help="org/name[@revision] or a local model directory")
    check.add_argument("--teacher", required=True, help="org/name[@revision] or a local directory")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    _store_flags(check)
    check.set_defaults(func=cmd_check)
    _add_commit(sub)
    _add_eval(sub)
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
