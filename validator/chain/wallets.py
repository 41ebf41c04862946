"""Wallet helpers: resolve a ``bt.Wallet`` the way ``btcli`` does, and make throwaway ones.

Precedence is explicit argument, then environment (``BT_WALLET``, ``BT_WALLET_HOTKEY``,
``BT_WALLET_PATH``, ``BT_NETWORK``), then the SDK defaults. Secrets never pass through argv:
only names and paths do (LESSONS 25).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import bittensor as bt
from bittensor.keyfiles import Keypair
from bittensor.wallet import DEFAULT_WALLET_PATH

from validator.chain.port import ChainError

DEFAULT_NETWORK = "finney"


def resolve_network(network: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """``network`` if given, else ``$BT_NETWORK``, else finney."""
    env = os.environ if env is None else env
    return network or env.get("BT_NETWORK") or DEFAULT_NETWORK


def load_wallet(
    name: str | None = None,
    hotkey: str | None = None,
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    require_hotkey: bool = True,
) -> bt.Wallet:
    """The wallet to sign with; raises ``ChainError`` naming the file when the hotkey is missing."""
    env = os.environ if env is None else env
    wallet = bt.Wallet(
        name=name or env.get("BT_WALLET") or "default",
        hotkey=hotkey or env.get("BT_WALLET_HOTKEY") or "default",
        path=str(path or env.get("BT_WALLET_PATH") or DEFAULT_WALLET_PATH),
    )
    if require_hotkey and not wallet.hotkey_file.exists_on_device():
        raise ChainError(
            f"No hotkey file at {wallet.hotkey_file.path}; create it with "
            f"`btcli wallet new-hotkey -w {wallet.name}` or pass --wallet-name/--hotkey-name/--wallet-path."
        )
    return wallet


def create_test_wallet(directory: str | Path, name: str = "test", hotkey: str = "default") -> bt.Wallet:
    """A throwaway wallet with a real, unencrypted sr25519 hotkey and a coldkey *public* key only.

    Enough to sign weights, commitments and HTTP requests with the hotkey; no coldkey secret is
    ever written, so nothing here can move funds. For tests and the demo.
    """
    wallet = bt.Wallet(name=name, hotkey=hotkey, path=str(directory))
    wallet.create_new_hotkey(use_password=False, overwrite=True, suppress=True)
    cold = Keypair.create_from_mnemonic(Keypair.generate_mnemonic(12))
    wallet.regenerate_coldkeypub(ss58_address=cold.ss58_address, overwrite=True)
    return wallet
