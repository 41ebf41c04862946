"""Shared fixtures: tiny models and a tokenizer are built on the fly (no network)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402

# The tiny round (teacher, tokenizer, teacher run) shared by the teacher and scoring tests.
pytest_plugins = ["round_fixtures"]


@pytest.fixture(scope="session")
def contest_hub(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """Tiny teacher + students in a LocalHub, built once per session (see tests/fixtures_contest.py)."""
    from fixtures_contest import build_model_hub

    return build_model_hub(tmp_path_factory.mktemp("contest-models"))


@pytest.fixture
def world(tmp_path: Path, contest_hub: tuple) -> Any:
    """A SimChain + LocalHub + store around the session's tiny models (tests/fixtures_contest.py)."""
    from fixtures_contest import make_world

    return make_world(tmp_path, *contest_hub)
