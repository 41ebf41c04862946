"""`miner.py commit` on a SimChain with real hotkeys and a LocalHub holding real tiny Qwen3.5 models."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import bittensor as bt
import bittensor.keyfiles as bt_keyfiles
import pytest
from bittensor.keyfiles import Keypair

import miner
from eval.admission import TeacherSpec
from eval.errors import TransientError
from eval.model_store.local import LocalHub
from scripts.tiny_models import save_model_dir, tiny_config, tiny_model, train_tokenizer
from validator.chain import submit as commit_flow
from validator.chain.commitments import format_commitment, parse_commitment
from validator.chain.port import ChainUnavailable, CommitmentTooLong, NotRegistered, RateLimited
from validator.chain.sim import SimChain
from validator.chain.wallets import create_test_wallet

NETUID = 7


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("commit-models")
    tok = train_tokenizer(vocab_size=512)
    cfg = tiny_config(len(tok))
    teacher = save_model_dir(tiny_model(cfg, seed=0), tok, root / "teacher")
    student = save_model_dir(tiny_model(cfg, seed=1), tok, root / "student")
    bad = shutil.copytree(student, root / "bad")
    (bad / "modeling_evil.py").write_text("import os")
    return teacher, student, bad


@pytest.fixture
def env(models, tmp_path):
    """A hub with a good and a bad model, a SimChain, and one registered and one unregistered wallet."""
    teacher, student, bad = models
    hub = LocalHub(tmp_path / "hub")
    rev = hub.publish("miner/student", student)
    bad_rev = hub.publish("miner/bad", bad)
    admin = SimChain(tmp_path / "sim.db", NETUID)
    wallets = tmp_path / "wallets"
    reg = create_test_wallet(wallets, name="reg")
    unreg = create_test_wallet(wallets, name="unreg")
    admin.register(reg.hotkey.ss58_address, reg.coldkeypub.ss58_address)
    yield {
        "hub": hub,
        "rev": rev,
        "bad_rev": bad_rev,
        "chain": admin,
        "teacher": teacher,
        "tmp": tmp_path,
        "reg": reg.hotkey.ss58_address,
        "unreg": unreg.hotkey.ss58_address,
        "wallets": wallets,
    }
    admin.close()


def commit(env, *extra: str, wallet: str = "reg", repo: str = "miner/student") -> list[str]:
    return [
        "commit",
        "--network",
        "sim",
        "--sim-db",
        str(env["tmp"] / "sim.db"),
        "--netuid",
        str(NETUID),
        "--wallet-name",
        wallet,
        "--hotkey-name",
        "default",
        "--wallet-path",
        str(env["wallets"]),
        "--model-repo",
        repo,
        "--teacher",
        str(env["teacher"]),
        "--hub-dir",
        str(env["hub"].root),
        *extra,
    ]


def test_commit_reads_back_same_commit_is_done_another_is_refused(env, capsys, models):
    assert miner.main(commit(env, "--yes")) == 0
    out = capsys.readouterr().out
    seen = env["chain"].commitments()[env["reg"]]
    assert seen.text == format_commitment("miner/student", env["rev"])
    assert parse_commitment(seen.text).revision == env["rev"]  # main resolved to the full SHA
    assert f"revision: miner/student main is at {env['rev']}" in out
    assert f"at block {seen.block}" in out and "COMMITTED" in out
    env["chain"].advance(3)
    assert miner.main(commit(env, "--yes", "--revision", env["rev"])) == 0  # exactly this is on chain: done
    out = capsys.readouterr().out
    assert f"COMMITTED miner/student@{env['rev']} at block {seen.block}" in out and "nothing was written" in out
    env["hub"].publish("miner/other", models[1])
    assert miner.main(commit(env, "--yes", repo="miner/other")) == 1  # another model would withdraw the first
    out = capsys.readouterr().out
    assert "already committed" in out and "withdraw" in out and "new hotkey" in out
    assert env["chain"].commitments()[env["reg"]] == seen  # the first one stands


def test_unregistered_hotkey_refused(env, capsys):
    assert miner.main(commit(env, "--yes", wallet="unreg")) == 1
    assert "not registered" in capsys.readouterr().out
    assert env["chain"].commitments() == {}


def test_inadmissible_model_refused_before_any_chain_write(env, capsys):
    assert miner.main(commit(env, "--yes", repo="miner/bad")) == 1
    out = capsys.readouterr().out
    assert "not admissible" in out and "modeling_evil.py" in out
    assert env["chain"].commitments() == {}


def test_too_long_commitment_refused(env, capsys):
    repo = "o" * 40 + "/" + "n" * 40  # a valid repo id, but the JSON is 147 bytes
    assert miner.main(commit(env, "--yes", "--revision", "a" * 40, repo=repo)) == 1
    out = capsys.readouterr().out
    assert "128" in out and "shorter repo id" in out
    assert env["chain"].commitments() == {}


def test_dry_run_writes_nothing(env, capsys):
    assert miner.main(commit(env, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and format_commitment("miner/student", env["rev"]) in out
    assert env["chain"].commitments() == {}


def test_no_tty_without_yes_refuses_without_hanging(env, capsys):
    assert miner.main(commit(env)) == 1  # pytest's stdin is not a terminal
    assert "--yes" in capsys.readouterr().out
    assert env["chain"].commitments() == {}


def _args(env, **over) -> commit_flow.CommitOptions:
    base = dict(network="sim", model_repo="miner/student", dry_run=False, yes=False, wait=5.0, poll_interval=0.01)
    return commit_flow.CommitOptions(**{**base, **over})


def _flow(env, store, **kw) -> int:
    chain = SimChain(env["tmp"] / "sim.db", NETUID, hotkey=env["reg"])
    return commit_flow.run_commit(
        _args(env, **kw.pop("args", {})),
        store=store,
        teacher=TeacherSpec.from_dir(env["teacher"]),
        chain=chain,
        hotkey=env["reg"],
        revision=env["rev"],
        **kw,
    )


def test_interactive_answer_decides(env):
    lines: list[str] = []
    assert _flow(env, env["hub"], isatty=lambda: True, ask=lambda _: "n", out=lines.append) == 1
    assert env["chain"].commitments() == {} and "nothing was written" in lines[-1]
    assert _flow(env, env["hub"], isatty=lambda: True, ask=lambda _: "y", out=lines.append) == 0
    assert env["reg"] in env["chain"].commitments()


class DownHub(LocalHub):
    def files(self, repo, revision):
        raise TransientError("HTTP 503 from the hub")


def test_hub_outage_is_transient_and_writes_nothing(env):
    lines: list[str] = []
    assert _flow(env, DownHub(env["hub"].root), args={"yes": True}, out=lines.append) == 2
    assert "TRY AGAIN LATER" in lines[-1] and "503" in lines[-1]
    assert env["chain"].commitments() == {}


def test_missing_sim_db_and_missing_wallet_are_usage_errors(env, capsys, tmp_path):
    argv = commit(env, "--yes")
    argv[argv.index("--sim-db") : argv.index("--sim-db") + 2] = []
    assert miner.main(argv) == 2 and "--sim-db" in capsys.readouterr().out
    assert miner.main(commit(env, "--yes", wallet="nobody")) == 2
    assert "No hotkey file" in capsys.readouterr().out


def test_open_chain_binds_sim_to_wallet_hotkey(env):
    wallet = create_test_wallet(Path(env["tmp"]) / "w2", name="x")
    chain, hotkey = commit_flow.open_chain("sim", NETUID, wallet, env["tmp"] / "sim.db")
    assert hotkey == wallet.hotkey.ss58_address and chain.hotkey == hotkey


def _secret_wallet(env, password: str | None) -> tuple[str, list[str]]:
    """A registered wallet whose hotkey comes from a known mnemonic; returns its name and every secret to hide."""
    mnemonic = Keypair.generate_mnemonic(12)
    wallet = bt.Wallet(name="secret", hotkey="default", path=str(env["wallets"]))
    wallet.regenerate_hotkey(mnemonic=mnemonic, hotkey_password=password, overwrite=True, suppress=True)
    cold = create_test_wallet(env["tmp"] / "cold", name="cold")
    env["chain"].register(Keypair.create_from_mnemonic(mnemonic).ss58_address, cold.coldkeypub.ss58_address)
    plain = json.loads(
        bt.Wallet(name="plain", path=str(env["wallets"]))
        .regenerate_hotkey(mnemonic=mnemonic, overwrite=True, suppress=True)
        .hotkey_file._read_data()
    )
    words = mnemonic.split()
    secrets = [mnemonic, plain["secretSeed"], plain["secretSeed"][2:], plain["privateKey"], plain["privateKey"][2:]]
    secrets += [" ".join(words[i : i + 3]) for i in range(len(words) - 2)]  # any run of three words
    return "secret", secrets + ([password] if password else [])


def _assert_hidden(secrets: list[str], *texts: str) -> None:
    blob = "\n".join(texts).lower()
    leaked = [s for s in secrets if s.lower() in blob]
    assert not leaked, f"secret material in the output: {len(leaked)} item(s)"


def test_encrypted_hotkey_prompts_for_its_password_and_no_secret_is_printed(env, capsys, caplog, monkeypatch):
    """The SDK's interactive unlock is reached (not bypassed), and neither key material nor password leaks."""
    password = "correct horse battery staple 42"
    name, secrets = _secret_wallet(env, password)
    prompts: list[str] = []
    monkeypatch.setattr(bt_keyfiles, "masked_input", lambda prompt: prompts.append(prompt) or password)
    caplog.set_level(logging.DEBUG)
    assert miner.main(commit(env, "--yes", wallet=name)) == 0
    captured = capsys.readouterr()
    assert len(prompts) == 1 and "unlock" in prompts[0]
    assert "COMMITTED" in captured.out
    _assert_hidden(secrets, captured.out, captured.err, caplog.text)


def test_wrong_password_is_one_sentence_and_writes_nothing(env, capsys, monkeypatch):
    name, secrets = _secret_wallet(env, "the real password")
    monkeypatch.setattr(bt_keyfiles, "masked_input", lambda prompt: "not it")
    assert miner.main(commit(env, "--yes", wallet=name)) == 2
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[-1].startswith("REFUSED: cannot unlock the hotkey") and "Traceback" not in captured.err
    assert env["chain"].commitments() == {}
    _assert_hidden(secrets, captured.out, captured.err)


def test_unencrypted_hotkey_secrets_stay_out_of_every_outcome(env, capsys, caplog):
    """Success, refusal and dry run alike print the public ss58 address only."""
    name, secrets = _secret_wallet(env, None)
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    for extra in (["--dry-run"], ["--yes"], ["--yes"]):  # shown, committed, refused as a second commit
        miner.main(commit(env, *extra, wallet=name))
        captured = capsys.readouterr()
        texts += [captured.out, captured.err]
    assert "COMMITTED" in texts[2] and "already holds exactly this commitment" in texts[4]
    _assert_hidden(secrets, *texts, caplog.text)


class RefusingChain(SimChain):
    """A SimChain whose write fails with ``error``; counts the attempts."""

    def __init__(self, *args, error: Exception, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.error, self.attempts = error, 0

    def commit(self, text: str, *, replace: bool = False) -> int:
        self.attempts += 1
        raise self.error


@pytest.mark.parametrize(
    ("error", "code", "words"),
    [
        (RateLimited("commitments are rate limited: wait 100 blocks"), 1, "rate limited"),
        (CommitmentTooLong("the chain stores at most 128 bytes"), 1, "128 bytes"),
        (NotRegistered("Hotkey x was deregistered"), 1, "deregistered"),
        (TransientError("websocket closed"), 3, "may still land"),
    ],
)
def test_chain_write_errors_are_one_sentence_and_never_retried(env, error, code, words):
    chain = RefusingChain(env["tmp"] / "sim.db", NETUID, hotkey=env["reg"], error=error)
    lines: list[str] = []
    teacher = TeacherSpec.from_dir(env["teacher"])
    status = commit_flow.run_commit(
        _args(env, yes=True, wait=0.2),
        store=env["hub"],
        teacher=teacher,
        chain=chain,
        hotkey=env["reg"],
        revision=env["rev"],
        out=lines.append,
    )
    assert status == code and chain.attempts == 1
    assert words in lines[-1] and "\n" not in lines[-1]
    assert lines[-1].startswith(("REFUSED:", "TRY AGAIN LATER:")) or "Do not commit anything else" in lines[-1]
    chain.close()


class LostAnswerChain(SimChain):
    """A SimChain whose write lands and then loses its answer, as a timed-out websocket does."""

    def commit(self, text: str, *, replace: bool = False) -> int:
        super().commit(text, replace=replace)
        raise ChainUnavailable("committing on finney timed out after 90s")


def test_lost_answer_to_a_commit_that_landed_is_reported_committed_and_a_rerun_agrees(env, capsys):
    """Not "try again" then "already committed": the chain is read back and says it is done."""
    chain = LostAnswerChain(env["tmp"] / "sim.db", NETUID, hotkey=env["reg"])
    lines: list[str] = []
    teacher = TeacherSpec.from_dir(env["teacher"])
    status = commit_flow.run_commit(
        _args(env, yes=True),
        store=env["hub"],
        teacher=teacher,
        chain=chain,
        hotkey=env["reg"],
        revision=env["rev"],
        out=lines.append,
    )
    chain.close()
    block = env["chain"].commitments()[env["reg"]].block
    assert status == 0 and lines[-1].startswith(f"COMMITTED miner/student@{env['rev']} at block {block}")
    assert "answer to the write was lost" in lines[-1]
    assert miner.main(commit(env, "--yes", "--revision", env["rev"])) == 0
    assert "already holds exactly this commitment" in capsys.readouterr().out


def test_commit_through_the_subtensor_adapter_settles_a_lost_answer(env):
    """The same over ``SubtensorChain``: inclusion only, its own write budget, a lost answer read back."""
    from subtensor_fakes import SimClient

    from validator.chain.subtensor import SubtensorChain

    calls: list[str] = []
    client = SimClient(env["chain"], lose_answer={"submit_call"}, calls=calls)
    wallet = bt.Wallet(name="reg", hotkey="default", path=str(env["wallets"]))
    chain = SubtensorChain("finney", NETUID, wallet, client_factory=lambda n: client)
    lines: list[str] = []
    try:
        status = commit_flow.run_commit(
            _args(env, yes=True),
            store=env["hub"],
            teacher=TeacherSpec.from_dir(env["teacher"]),
            chain=chain,
            hotkey=env["reg"],
            revision=env["rev"],
            out=lines.append,
        )
    finally:
        chain.close()
    assert status == 0 and lines[-1].startswith("COMMITTED") and calls.count("submit_call") == 1
    assert client.kwargs == [{"signer": "hotkey", "wait_for_inclusion": True, "wait_for_finalization": False}]


def test_unreachable_network_is_one_sentence(env, capsys):
    argv = commit(env, "--yes")
    argv[argv.index("--network") + 1] = "ws://127.0.0.1:9"  # nothing listens on the discard port
    assert miner.main(argv) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("TRY AGAIN LATER:") and "127.0.0.1:9" in out[-1]


@pytest.mark.parametrize("revision", ["main", "abc1234", "A" * 40])
def test_branch_or_short_revision_refused_with_the_right_hint(env, capsys, revision):
    assert miner.main(commit(env, "--yes", "--revision", revision)) == 1
    out = capsys.readouterr().out
    assert "40-character" in out and "shorter repo id" not in out and "fix the repo id or revision" in out
    assert env["chain"].commitments() == {}
