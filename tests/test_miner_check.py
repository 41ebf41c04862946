"""`miner.py check` end to end: a real tiny Qwen3.5 model, a local teacher, exit codes and the JSON shape."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import miner
from eval.model_store.local import LocalHub
from scripts.tiny_models import save_model_dir, tiny_config, tiny_model, train_tokenizer

KEYS = {"ok", "reason", "check", "detail", "params", "content_hash"}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("miner")
    tok = train_tokenizer(vocab_size=512)
    cfg = tiny_config(len(tok))
    model = tiny_model(cfg, seed=0)
    teacher = save_model_dir(model, tok, root / "teacher")
    student = save_model_dir(tiny_model(cfg, seed=1), tok, root / "student", max_shard_size="200KB")
    return root, teacher, student


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code = miner.main(["check", *argv, "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    doc = json.loads(out[0])
    assert set(doc) == KEYS
    return code, doc


def test_local_dir_admissible_with_content_hash(dirs, capsys):
    _, teacher, student = dirs
    assert len(list(student.glob("*.safetensors"))) > 1  # sharded
    code, doc = run_json(capsys, "--model", str(student), "--teacher", str(teacher))
    assert code == 0 and doc["ok"] is True and doc["reason"] is None and doc["check"] is None
    assert doc["params"] > 0 and len(doc["content_hash"]) == 64


def test_local_dir_rejected_exit_1_and_hint(dirs, capsys, tmp_path):
    _, teacher, student = dirs
    bad = shutil.copytree(student, tmp_path / "bad")
    (bad / "modeling_evil.py").write_text("import os")
    code, doc = run_json(capsys, "--model", str(bad), "--teacher", str(teacher))
    assert (code, doc["ok"], doc["reason"], doc["check"]) == (1, False, "INVALID", "files")
    assert doc["params"] is None and doc["content_hash"] is None
    assert miner.main(["check", "--model", str(bad), "--teacher", str(teacher)]) == 1
    human = capsys.readouterr().out
    assert "modeling_evil.py" in human and "to fix:" in human


def test_teacher_replaces_rules_vocab(dirs, capsys, tmp_path):
    _, teacher, student = dirs
    other = shutil.copytree(teacher, tmp_path / "t2")
    cfg = json.loads((other / "config.json").read_text())
    cfg["vocab_size"] = 1024
    (other / "config.json").write_text(json.dumps(cfg))
    code, doc = run_json(capsys, "--model", str(student), "--teacher", str(other))
    assert (code, doc["check"]) == (1, "vocab")


def test_hub_dir_path_with_revision(dirs, capsys, tmp_path):
    _, teacher, student = dirs
    hub = LocalHub(tmp_path / "hub")
    rev = hub.publish("miner/student", student)
    trev = hub.publish("org/teacher", teacher)
    hub_args = ["--hub-dir", str(hub.root)]
    code, doc = run_json(capsys, "--model", f"miner/student@{rev}", "--teacher", f"org/teacher@{trev}", *hub_args)
    assert code == 0 and doc["ok"] and doc["content_hash"] is None and rev in doc["detail"]
    code, doc = run_json(capsys, "--model", "miner/student", "--teacher", "org/teacher", *hub_args)  # resolves main
    assert code == 0
    code, doc = run_json(capsys, "--model", "miner/student@main", "--teacher", str(teacher), *hub_args)
    assert (code, doc["check"]) == (1, "format")
    code, doc = run_json(capsys, "--model", "miner/gone@" + "0" * 40, "--teacher", str(teacher), *hub_args)
    assert (code, doc["reason"], doc["check"]) == (1, "INVALID", "availability")


def test_usage_errors_exit_2(dirs, capsys, tmp_path):
    _, teacher, student = dirs
    assert miner.main(["check", "--model", str(student)]) == 2
    assert miner.main([]) == 2
    code, doc = run_json(
        capsys, "--model", str(student), "--teacher", str(tmp_path / "nope"), "--hub-dir", str(tmp_path)
    )
    assert (code, doc["check"]) == (2, "usage")


def test_script_entry_point(dirs):
    _, teacher, student = dirs
    proc = subprocess.run(
        [sys.executable, "miner.py", "check", "--model", str(student), "--teacher", str(teacher), "--json"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] is True


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (b'{"architectures": ["Qwen3_5ForCausalLM"]}', "no integer vocab_size"),
        (b'{"vocab_size": 512,', "not valid JSON"),
        (b'{"vocab_size": "512"}', "no integer vocab_size"),
        (b'{"vocab_size": 0}', "positive integer"),
        (b'{"vocab_size": -5}', "positive integer"),
        (b"[512]", "must be a JSON object"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_bad_teacher_config_is_a_clean_usage_error(dirs, capsys, tmp_path, config, message):
    _, teacher, student = dirs
    bad = shutil.copytree(teacher, tmp_path / "teacher")
    (bad / "config.json").write_bytes(config)
    code, doc = run_json(capsys, "--model", str(student), "--teacher", str(bad))
    assert (code, doc["ok"], doc["check"]) == (2, False, "usage")
    assert "cannot read the teacher" in doc["detail"] and message in doc["detail"]
    assert miner.main(["check", "--model", str(student), "--teacher", str(bad)]) == 2
    captured = capsys.readouterr()
    assert message in captured.out and "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize("outcome", ["admissible", "rejected", "bad teacher"])
def test_local_check_leaves_no_temp_dir(dirs, capsys, tmp_path, monkeypatch, outcome):
    _, teacher, student = dirs
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # count only this test's temp dirs
    model, teacher_arg = student, teacher
    if outcome == "rejected":
        model = shutil.copytree(student, tmp_path / "bad")
        (model / "pytorch_model.bin").write_bytes(b"x")
    elif outcome == "bad teacher":
        teacher_arg = tmp_path / "no-teacher"
    before = sorted(scratch.iterdir())
    code, _ = run_json(capsys, "--model", str(model), "--teacher", str(teacher_arg))
    assert code == {"admissible": 0, "rejected": 1, "bad teacher": 2}[outcome]
    assert sorted(scratch.iterdir()) == before == []
    assert sorted(p.name for p in model.iterdir()) and (model / "config.json").is_file()  # the model is untouched


@pytest.mark.parametrize("model", ["./no-such-dir", "/no/such/dir", "../nope", "."])
def test_missing_local_directory_is_a_usage_error(dirs, capsys, tmp_path, monkeypatch, model):
    # A typo'd path must not be looked up as a repo id (and must not crash with a traceback).
    _, teacher, _ = dirs
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text("{}")  # "." is a directory but not a model: its check fails on files
    code, doc = run_json(capsys, "--model", model, "--teacher", str(teacher), "--hub-dir", str(tmp_path / "hub"))
    if model == ".":
        assert (code, doc["reason"], doc["check"]) == (1, "INVALID", "files")
    else:
        assert (code, doc["ok"], doc["reason"], doc["check"]) == (2, False, None, "usage")
        assert "not a model directory" in doc["detail"]


@pytest.mark.parametrize("model", ["bad repo", "org/a/b", "https://huggingface.co/org/m", "org/../m"])
def test_invalid_repo_id_without_revision_is_a_format_rejection(dirs, capsys, tmp_path, model):
    _, teacher, _ = dirs
    code, doc = run_json(capsys, "--model", model, "--teacher", str(teacher), "--hub-dir", str(tmp_path / "hub"))
    assert (code, doc["reason"], doc["check"]) == (1, "INVALID", "format")
    assert miner.main(["check", "--model", model, "--teacher", str(teacher), "--hub-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "to fix:" in captured.out and "Traceback" not in captured.out + captured.err


def test_help_documents_exit_codes_and_transient(capsys):
    assert miner.main(["check", "--help"]) == 0
    text = capsys.readouterr().out
    for needle in ("0 admissible", "1 not admissible", '"usage"', '"transient"', "try again later", "content_hash"):
        assert needle in text, needle
