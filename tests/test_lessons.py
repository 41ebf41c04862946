"""Gap tests for LESSONS.md: one test per lesson whose rule had no test that fails on the vulnerable behaviour.

Each test runs the real code; only outside systems are stood in for (the pod, the HTTP hub).
The map of every lesson to its rule and tests is docs/lessons.md.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from fixtures_contest import RULES as CONTEST_RULES
from fixtures_contest import TEACHER, FakePod, make_validator, seed

from eval import downloads, runner, scoring
from eval.errors import InfraError, TransientError
from eval.hashing import metadata_hash
from eval.kl import kl_from_hidden, kl_per_position
from eval.model_store.local import LocalHub
from eval.schemas import ModelResult, SubmissionId
from scripts.pod_fixtures import make_job, ref
from tests.pod_helpers import fake_result
from validator.admit import record_attempt
from validator.contest import NewSubmission
from validator.pod_errors import InvalidResult
from validator.pod_result import validate_result
from validator.store.database import Store, StoreError

REPO = Path(__file__).resolve().parents[1]
NO_DISK_RESERVE = downloads.DiskLimits(min_free_bytes=0)
PROMPTS = [
    "The river valley was quiet in the early morning, and the farmers walked down to the fields.",
    "A prime number is a natural number greater than one that has no divisors other than one and itself.",
]


@pytest.fixture
def one_thread():
    # Tiny models gain nothing from threads; on a shared 2-core box they make them many times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _contest_job(revs: dict[str, str], king: str, challengers: list[str], job_id: str) -> Any:
    return make_job(
        job_id,
        rules=CONTEST_RULES,
        prompts=PROMPTS,
        king=ref(king, revs[king], 1),
        challengers=[ref(name, revs[name], 10 + i) for i, name in enumerate(challengers)],
    )


# --- LESSONS 5: hash store clobbering ----------------------------------------------------------------
def test_lesson_05_integrity_shas_and_weight_hashes_never_clobber(tmp_path):
    store = Store.open(tmp_path / "v.db")
    hk_a, hk_b = "5" + "A" * 47, "5" + "B" * 47
    same = "a" * 64  # one string used as a file SHA, a metadata hash and a content hash at once
    subs = [
        NewSubmission(hk, block, uid, "ck", "{}", "pending", f"org/{uid}", "d" * 40)  # type: ignore[arg-type]
        for hk, block, uid in ((hk_a, 5, 0), (hk_b, 9, 1))
    ]
    store.add_submissions(subs)
    record_attempt(store, SubmissionId(hk_a, 5), "admitted", params=10, metadata_hash=same)
    store.add_integrity(SubmissionId(hk_a, 5), {"model.safetensors": same, "config.json": "b" * 64})
    store.add_hash(SubmissionId(hk_a, 5), "content", "c" * 64)
    store.add_integrity(SubmissionId(hk_b, 9), {"model.safetensors": same})  # b's file SHA equals a's metadata hash
    record_attempt(store, SubmissionId(hk_b, 9), "admitted", params=10, metadata_hash="e" * 64)
    assert store.metadata_hash_owner(same) == SubmissionId(hk_a, 5) and store.metadata_hash_holders("e" * 64) == [
        SubmissionId(hk_b, 9)
    ]
    assert store.known_content_hashes() == [(SubmissionId(hk_a, 5), "c" * 64)]
    rows = store._db.execute("SELECT hotkey, path, sha256 FROM integrity ORDER BY hotkey, path").fetchall()
    assert [tuple(r) for r in rows] == [
        (hk_a, "config.json", "b" * 64),
        (hk_a, "model.safetensors", same),
        (hk_b, "model.safetensors", same),
    ]
    kinds = store._db.execute("SELECT kind, value FROM hashes WHERE hotkey = ? ORDER BY kind", (hk_a,)).fetchall()
    assert [tuple(r) for r in kinds] == [("content", "c" * 64), ("metadata", same)]
    with pytest.raises((sqlite3.IntegrityError, StoreError)):  # the hash table is typed: no third kind
        store.add_hash(SubmissionId(hk_a, 5), "integrity", same)
    store.close()


# --- LESSONS 7: remote code --------------------------------------------------------------------------
def test_lesson_07_no_loader_can_trust_remote_code():
    code = [p for p in REPO.glob("**/*.py") if ".venv" not in p.parts and p.name != "test_lessons.py"]
    offenders = [str(p) for p in code if re.search(r"trust_remote_code\s*=\s*True", p.read_text(errors="replace"))]
    assert offenders == []
    for path in (REPO / "eval").glob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"from_pretrained\(", text):
            depth, end = 1, m.end()
            while depth:  # the whole call, up to its balanced closing parenthesis
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            call = text[m.end() : end]
            assert "trust_remote_code=False" in call, f"{path.name}: from_pretrained without trust_remote_code=False"
    assert not any(p.endswith((".py", ".bin", ".pt", ".pkl")) or p == "*" for p in downloads.MODEL_PATTERNS)


# --- LESSONS 11: changing weights after commit ------------------------------------------------------
def test_lesson_11_main_moving_after_the_commit_changes_nothing(world):
    seed(world, ("m1", "alice/m1"))
    pinned = world.revs["alice/m1"]
    hub = world.hub
    src = next(p for p in (world.hub_root / "bob" / "m2").iterdir() if p.is_dir() and not p.name.startswith("."))
    moved = hub.publish("alice/m1", src)  # the owner pushes other weights to main after committing
    assert moved != pinned and hub.resolve("alice/m1") == moved
    pod = FakePod()
    v = make_validator(world, pod)
    v.epoch()
    (sent,) = pod.calls[0].models
    assert sent.revision == pinned
    row = v.store.submission(world.miners["m1"])[0]
    assert row.revision == pinned
    key = SubmissionId(world.miners["m1"], row.commit_block)
    assert v.store.metadata_hash_owner(metadata_hash(hub.files("alice/m1", pinned))) == key
    assert v.store.metadata_hash_owner(metadata_hash(hub.files("alice/m1", moved))) is None


# --- LESSONS 12: truncated scoring ---------------------------------------------------------------------
def test_lesson_12_result_scoring_fewer_tokens_than_the_teacher_is_refused():
    job = make_job("j12", n_challengers=2)
    good = fake_result(job)
    assert validate_result(job, good) is good
    n = len(job.prompts)
    truncated = good.models[1].model_copy(update={"prompt_tokens": [2] * n})  # scored only a prefix of each
    bad = good.model_copy(update={"models": [good.models[0], truncated, good.models[2]]})
    with pytest.raises(InvalidResult, match="tokens"):
        validate_result(job, bad)
    stopped = good.models[2].model_copy(
        update={"status": "early_stopped", "prompt_kl": [0.5], "prompt_tokens": [good.teacher.continuation_tokens[0]]}
    )
    assert validate_result(job, good.model_copy(update={"models": [*good.models[:2], stopped]}))


# --- LESSONS 15: KL = 0 poisoning ----------------------------------------------------------------------
def test_lesson_15_a_zero_kl_challenger_never_becomes_the_early_stop_reference(
    contest_hub, tmp_path, monkeypatch, one_thread
):
    hub_root, revs = contest_hub
    job = _contest_job(revs, "alice/m1", [TEACHER, "bob/m2"], "j15")  # the teacher itself scores KL ~ 0
    seen: list[tuple[str, Any]] = []
    real = scoring.score_student

    def spy(model: Any, run: Any, rules: Any, **kw: Any) -> Any:
        out = real(model, run, rules, **kw)
        seen.append((out.prompt_kl, kw.get("king_kl")))
        return out

    monkeypatch.setattr(scoring, "score_student", spy)
    result = runner.run_job(job, LocalHub(hub_root), tmp_path, "cpu", limits=NO_DISK_RESERVE)
    king, zero, other = result.models
    assert max(zero.prompt_kl) < 1e-4 < min(king.prompt_kl)
    assert [s[1] for s in seen] == [None, king.prompt_kl, king.prompt_kl]


# --- LESSONS 16: sparse-KL artifacts --------------------------------------------------------------------
def test_lesson_16_top_k_agreement_with_tail_disagreement_is_not_zero():
    v, k = 1000, 10
    teacher = torch.full((1, v), -20.0)
    teacher[0, :k] = torch.linspace(5.0, 4.0, k)
    student = teacher.clone()
    student[0, k:] = 3.0  # same top-k logits; most of the student's mass sits in the tail
    top = torch.log_softmax(teacher[0, :k], -1)  # what a renormalised top-k intersection would compare
    assert float((top.exp() * (top - torch.log_softmax(student[0, :k], -1))).sum()) < 1e-6
    full = kl_per_position(teacher, student)
    p = torch.log_softmax(teacher.double(), -1)
    expected = float((p.exp() * (p - torch.log_softmax(student.double(), -1))).sum())
    assert expected > 2.0 and full.item() == pytest.approx(expected, rel=1e-4)
    via_head = kl_from_hidden(torch.log_softmax(teacher, -1), student, torch.eye(v))  # identity lm_head
    assert via_head.item() == pytest.approx(expected, rel=1e-4)


# --- LESSONS 18: re-evaluation loops ---------------------------------------------------------------------
def test_lesson_18_a_model_error_is_final_and_never_dispatched_again(world):
    seed(world, ("m1", "alice/m1"), ("m2", "bob/m2"))
    pod = FakePod({"alice/m1": 0.5})

    def break_bob(result: Any) -> Any:
        models = [
            m if m.ref.repo != "bob/m2" else ModelResult(ref=m.ref, status="model_error", error="cannot load")
            for m in result.models
        ]
        return result.model_copy(update={"models": models})

    pod.mutate = break_bob
    v = make_validator(world, pod)
    assert v.epoch().round_state == "done"
    assert v.store.submission(world.miners["m2"])[0].status not in ("pending", "admitted")
    for _ in range(3):
        world.sim.advance(10)
        assert v.epoch().round_kind == "none"
    assert len(pod.calls) == 1


# --- LESSONS 21: transient outages ------------------------------------------------------------------------
class OutageHub:
    """The hub, answering "503" to every download of ``repo`` (listings still work)."""

    def __init__(self, inner: LocalHub, repo: str) -> None:
        self.inner, self.repo, self.downloads = inner, repo, 0

    def download(self, repo: str, revision: str, dest: Path, allow_patterns: list[str]) -> Path:
        if repo == self.repo:
            self.downloads += 1
            raise TransientError("HTTP 503 from the hub")
        return self.inner.download(repo, revision, dest, allow_patterns)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_lesson_21_pod_download_outage_fails_the_job_never_the_model(contest_hub, tmp_path, monkeypatch, one_thread):
    hub_root, revs = contest_hub
    monkeypatch.setattr(downloads.time, "sleep", lambda s: None)  # skip the retry back-off
    job = _contest_job(revs, "alice/m1", ["bob/m2"], "j21")
    hub = OutageHub(LocalHub(hub_root), "bob/m2")
    with pytest.raises(InfraError, match="unavailable"):  # not a model_error result for bob
        runner.run_job(job, hub, tmp_path, "cpu", limits=NO_DISK_RESERVE)
    assert hub.downloads == downloads.DOWNLOAD_ATTEMPTS
    scratch = downloads.job_dir_name("j21")
    assert not (tmp_path / "models" / scratch).exists() and not (tmp_path / "teacher-cache" / scratch).exists()


# --- LESSONS 25: secrets ----------------------------------------------------------------------------------
_SECRET_PATTERNS = [
    re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),  # Hugging Face token
    re.compile(r'"(secretSeed|privateKey|secretPhrase)"\s*:\s*"[^"]{16,}"'),  # a bittensor keyfile
    re.compile("-----BEGIN [A-Z ]*" + "PRIVATE KEY-----"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
]


def _tracked_files() -> list[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    return subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()


def test_lesson_25_tracked_files_hold_no_secrets_and_state_is_ignored():
    files = _tracked_files()
    hits = []
    for name in files:
        path = REPO / name
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        hits += [f"{name}: {p.pattern}" for p in _SECRET_PATTERNS if p.search(text)]
    assert hits == []
    assert not [f for f in files if re.search(r"(^|/)(hotkeys|coldkey|coldkeypub\.txt)(/|$)", f)]
    assert [f for f in files if f.startswith("state/")] in ([], ["state/README.md"])
    for probe in ("state/validator.db", "state/validator.db-wal", "state/wallets/x/hotkeys/default", "state/pod/x"):
        assert subprocess.run(["git", "check-ignore", "-q", probe], cwd=REPO).returncode == 0, probe


def test_lesson_25_no_secret_ever_travels_in_argv(capsys):
    from api.__main__ import parse_args as api_args
    from miner import build_parser as miner_parser
    from validator.pod.settings import parse_args as pod_args
    from validator.settings import Settings, build_parser

    helps = []
    for show in (
        lambda: build_parser().parse_args(["run", "--help"]),
        lambda: pod_args(["--help"]),
        lambda: api_args(["--help"]),
        lambda: miner_parser().parse_args(["commit", "--help"]),
    ):
        with pytest.raises(SystemExit):
            show()
        helps.append(capsys.readouterr().out)
    flags = {f for text in helps for f in re.findall(r"--[a-z][a-z0-9-]*", text)}
    assert "--wallet-path" in flags and "--pod" in flags
    assert not {f for f in flags if re.search(r"token|secret|password|mnemonic|seed|private|coldkey", f)}
    assert not [f for f in Settings.model_fields if re.search(r"token|secret|password|mnemonic", f)]
    pm2 = (REPO / "scripts" / "ecosystem.config.js").read_text()
    for block in re.findall(r"args:\s*\[(.*?)\]", pm2, flags=re.S):
        assert not re.search(r"TOKEN|SECRET|PASSWORD|MNEMONIC|BT_WALLET", block), block
    for script in (REPO / "scripts").glob("*.sh"):
        assert not re.search(r"--(hf-)?token|--password|--mnemonic|HF_TOKEN=\S", script.read_text()), script.name


def test_lesson_25_wallet_key_files_are_owner_only(tmp_path):
    from validator.chain.wallets import create_test_wallet

    wallet = create_test_wallet(tmp_path)
    assert Path(wallet.hotkey_file.path).stat().st_mode & 0o077 == 0


@pytest.fixture
def hub_online(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the hub stand-in is on loopback


def test_lesson_25_hf_token_never_reaches_logs_store_or_api(world, hub_online, monkeypatch, caplog):
    from fastapi.testclient import TestClient
    from hub_standin import FakeHub

    from api.app import Settings, create_app
    from eval.model_store.huggingface import HuggingFaceStore

    token = "hf_" + secrets.token_hex(17)
    monkeypatch.setenv("HF_TOKEN", token)
    hub = FakeHub(LocalHub(world.hub_root))
    try:
        caplog.set_level(logging.DEBUG)
        seed(world, ("m1", "alice/m1"), ("m2", "bob/m2"))
        v = make_validator(world, FakePod({"alice/m1": 0.5}))
        v.model_store = HuggingFaceStore(endpoint=hub.url, timeout=5)  # the token comes from the env only
        hub.fail_next = [503]  # one outage: its message is logged and stored
        report = v.epoch()
        assert report.admission.transient
        for _ in range(3):
            world.sim.advance(20)
            v.epoch()
        assert v.store.current_king() is not None  # the epoch really went through the hub
    finally:
        hub.server.shutdown()
        hub.server.server_close()
    assert f"Bearer {token}" in hub.auth_seen  # the token was used...
    assert token not in caplog.text  # ...and never logged
    v.store.close()
    for f in world.db.parent.glob(world.db.name + "*"):
        assert token.encode() not in f.read_bytes(), f.name
    client = TestClient(create_app(Settings(db=world.db)))
    paths = [r.path for r in client.app.routes if "GET" in getattr(r, "methods", ()) and "{" not in r.path]
    assert len(paths) > 5
    for path in paths:
        assert token not in client.get(path).text, path


# --- LESSONS 24: bounded caches --------------------------------------------------------------------------
def test_lesson_24_hub_adapter_cache_is_bounded_by_revisions(tmp_path, hub_online):
    from admission_fixtures import tensors, write_model
    from hub_standin import FakeHub

    from eval.model_store.huggingface import HuggingFaceStore

    hub = FakeHub(LocalHub(tmp_path / "hub"))
    try:
        revs = [
            hub.hub.publish("org/m", write_model(tmp_path / f"src{i}", tensor_dict=tensors(seed=i))) for i in range(3)
        ]
        store = HuggingFaceStore(endpoint=hub.url, timeout=5, max_cached_revisions=2)
        for rev in revs:
            store.files("org/m", rev)
            store.read_file("org/m", rev, "config.json", 1 << 20)
            store.safetensors_header("org/m", rev, "model.safetensors")
        assert {k[1] for k in store._files} == set(revs[1:])  # the oldest revision was forgotten
        assert {k[1] for k in store._blobs} | {k[1] for k in store._headers} == set(revs[1:])
        calls = store.http_calls
        store.files("org/m", revs[2])
        assert store.http_calls == calls  # a recent revision is still served from memory
        store.files("org/m", revs[0])
        assert store.http_calls == calls + 1
    finally:
        hub.server.shutdown()
        hub.server.server_close()


# --- the map itself ----------------------------------------------------------------------------------
def test_every_test_the_lessons_map_names_exists():
    """A renamed or deleted test must not leave the map pointing at nothing."""
    root = Path(__file__).resolve().parent.parent
    table = (root / "docs" / "lessons.md").read_text()
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)", table)
    assert len(named) > 50
    missing = [
        f"{path}::{name}"
        for path, name in named
        if not (root / path).is_file() or f"def {name}(" not in (root / path).read_text()
    ]
    assert missing == []
