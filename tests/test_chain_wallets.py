"""Wallet helpers: real sr25519 hotkeys in a temporary directory."""

from __future__ import annotations

import os
from pathlib import Path

import bittensor as bt
import pytest

from validator.chain.port import ChainError
from validator.chain.wallets import create_test_wallet, load_wallet, resolve_network


def test_create_test_wallet_has_real_hotkey_and_no_coldkey_secret(tmp_path: Path) -> None:
    wallet = create_test_wallet(tmp_path, "w", "hk")
    assert wallet.hotkey.ss58_address.startswith("5")
    assert wallet.coldkeypub.ss58_address != wallet.hotkey.ss58_address
    assert not (tmp_path / "w" / "coldkey").exists()
    assert sorted(os.listdir(tmp_path / "w")) == ["coldkeypub.txt", "hotkeys"]
    body = b'{"job":1}'
    pod = create_test_wallet(tmp_path, "pod").hotkey.ss58_address
    headers = bt.http_auth.sign(wallet, method="POST", path="/jobs", body=body, receiver_ss58=pod)
    caller = bt.http_auth.verify(headers, body, method="POST", path="/jobs", self_hotkey_ss58=pod)
    assert wallet.hotkey.ss58_address in str(caller)


def test_load_wallet_precedence(tmp_path: Path) -> None:
    a = create_test_wallet(tmp_path, "a", "h1")
    b = create_test_wallet(tmp_path, "b", "h2")
    env = {"BT_WALLET": "a", "BT_WALLET_HOTKEY": "h1", "BT_WALLET_PATH": str(tmp_path)}
    assert load_wallet(env=env).hotkey.ss58_address == a.hotkey.ss58_address
    explicit = load_wallet("b", "h2", tmp_path, env=env)
    assert explicit.hotkey.ss58_address == b.hotkey.ss58_address


def test_missing_hotkey_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ChainError, match="No hotkey file"):
        load_wallet("nobody", "none", tmp_path, env={})
    assert load_wallet("nobody", "none", tmp_path, env={}, require_hotkey=False).name == "nobody"


def test_resolve_network() -> None:
    assert resolve_network("test", {"BT_NETWORK": "local"}) == "test"
    assert resolve_network(None, {"BT_NETWORK": "local"}) == "local"
    assert resolve_network(None, {}) == "finney"
