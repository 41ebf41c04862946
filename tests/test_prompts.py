"""eval.prompts: block-hash seeding, deterministic selection, cutting, the local corpus (FineWeb: test_fineweb)."""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eval.errors import PromptError
from eval.prompts import (
    LocalCorpus,
    cut_prompt,
    draw,
    prompt_seed,
    prompt_sha256,
    sample_prompts,
)
from eval.rules import ContestRules

RULES = ContestRules()
SMALL = ContestRules(prompts_per_round=4, early_stop_min_prompts=2, prompt_min_chars=40, prompt_max_chars=120)


def _hash(i: int) -> str:
    return "0x" + hashlib.sha256(f"block-{i}".encode()).hexdigest()


H = _hash(0)


def _docs(count: int, short_every: int = 0) -> list[str]:
    """Distinct documents; every ``short_every``-th one is too short for SMALL."""
    docs = []
    for i in range(count):
        if short_every and i % short_every == 0:
            docs.append(f"short {i}.")
        else:
            docs.append(
                f"Document {i} opens here. " + " ".join(f"Sentence {j} of doc {i} says a thing." for j in range(6))
            )
    return docs


def _doc_id(prompt: str) -> int:
    """Which document a prompt was cut from (the cut may start at any sentence)."""
    m = re.search(r"(?:Document|doc) (\d+)", prompt)
    assert m, prompt
    return int(m.group(1))


def _write_jsonl(path: Path, docs: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs)), encoding="utf-8")


def _write_parquet(path: Path, docs: list[str], row_group_size: int = 3) -> None:
    pq.write_table(pa.table({"text": docs, "id": list(range(len(docs)))}), path, row_group_size=row_group_size)


# --- seeds -------------------------------------------------------------------------------------


def test_seed_depends_on_hash_and_rules_only() -> None:
    assert prompt_seed(H, RULES) == prompt_seed(H, ContestRules())
    assert prompt_seed(H, RULES) != prompt_seed(_hash(1), RULES)
    assert prompt_seed(H, RULES) != prompt_seed(H, RULES.model_copy(update={"epsilon": 0.02}))
    assert 0 <= prompt_seed(H, RULES) < 2**64


def test_api_takes_no_block_number() -> None:
    # LESSONS 13: prompts are a function of the block hash; the block number cannot even be passed.
    for fn in (prompt_seed, sample_prompts):
        assert not any("number" in p or p == "block" for p in inspect.signature(fn).parameters)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0x",
        "ab" * 32,
        "0x" + "ab" * 31,
        "0x" + "ab" * 33,
        "0x" + "AB" * 32,
        "0x" + "zz" * 32,
        "12345",
        " 0x" + "ab" * 32,
    ],
)
def test_malformed_hash_rejected(bad: str) -> None:
    with pytest.raises(PromptError, match="malformed block hash"):
        prompt_seed(bad, RULES)
    with pytest.raises(PromptError):
        sample_prompts(bad, RULES, LocalCorpus())


def test_draw_is_stable_sha256_counter() -> None:
    expected = int.from_bytes(hashlib.sha256((42).to_bytes(8, "big") + b"row").digest()[:8], "big")
    assert draw(42, "row") == expected and draw(42, "row") != draw(42, "shard")


def test_prompt_sha256() -> None:
    assert prompt_sha256("héllo") == hashlib.sha256("héllo".encode()).hexdigest()


# --- cutting -----------------------------------------------------------------------------------


def test_cut_short_document_skipped_and_whole_document_kept() -> None:
    assert cut_prompt("too short.", 40, 120, 0) is None
    doc = "  A   document\n\nwith   messy\twhitespace that is long enough to keep.  "
    assert cut_prompt(doc, 40, 120, 7) == "A document with messy whitespace that is long enough to keep."


def test_cut_ends_at_a_sentence_end_within_bounds() -> None:
    doc = " ".join(f"This is sentence number {i}." for i in range(40))
    for choice in range(30):
        p = cut_prompt(doc, 40, 120, choice)
        assert p is not None and 40 <= len(p) <= 120
        assert p.endswith(".") and p[0].isupper()  # starts at a sentence start, ends at a sentence end
    assert len({cut_prompt(doc, 40, 120, c) for c in range(30)}) > 10  # the start really varies


def test_cut_without_sentence_end_falls_back_to_a_space_then_hard_cut() -> None:
    words = " ".join(["word"] * 100)
    p = cut_prompt(words, 40, 120, 0)
    assert p is not None and 40 <= len(p) <= 120 and p.endswith("word")
    blob = "x" * 500
    assert cut_prompt(blob, 40, 120, 3) == "x" * 120


# --- sampling ----------------------------------------------------------------------------------


def test_pydoc_default_is_deterministic_and_bounded() -> None:
    a = sample_prompts(H, RULES, LocalCorpus())
    b = sample_prompts(H, RULES, LocalCorpus())
    assert a == b and len(a) == RULES.prompts_per_round == len(set(a))
    assert all(RULES.prompt_min_chars <= len(p) <= RULES.prompt_max_chars for p in a)
    assert all(p == " ".join(p.split()) for p in a)
    assert [prompt_sha256(p) for p in a] == [prompt_sha256(p) for p in b]


def test_many_hashes_give_distinct_prompt_sets() -> None:
    sets = {tuple(sample_prompts(_hash(i), RULES, LocalCorpus(), n=8)) for i in range(60)}
    assert len(sets) == 60


def test_n_override_and_bounds() -> None:
    assert len(sample_prompts(H, RULES, LocalCorpus(), n=3)) == 3
    for bad in (0, -1, 5000):
        with pytest.raises(PromptError, match="prompt count"):
            sample_prompts(H, RULES, LocalCorpus(), n=bad)


def test_local_jsonl_skips_short_docs_and_wraps(tmp_path: Path) -> None:
    docs = _docs(12, short_every=3)
    _write_jsonl(tmp_path / "a.jsonl", docs)
    src = LocalCorpus(tmp_path)
    assert src.shards() == ["a.jsonl"] and src.num_rows("a.jsonl") == 12
    usable = {cut_prompt(d, 40, 120, 0) for d in docs} - {None}
    for i in range(10):
        prompts = sample_prompts(_hash(i), SMALL, src)
        assert len(prompts) == 4 and len(set(prompts)) == 4
        assert not any(p.startswith("short") for p in prompts)
        assert all(40 <= len(p) <= 120 for p in prompts)
        assert {_doc_id(p) for p in prompts} <= {j for j in range(12) if j % 3}
    assert usable


def test_duplicates_are_skipped(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "dup.jsonl", ["The same document, repeated over and over again here."] * 10 + _docs(3))
    prompts = sample_prompts(H, SMALL, LocalCorpus(tmp_path))
    assert len(prompts) == len(set(prompts)) == 4


def test_not_enough_documents_is_a_prompt_error(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "few.jsonl", _docs(3) + ["tiny"] * 5)
    with pytest.raises(PromptError, match="only 3 usable"):
        sample_prompts(H, SMALL, LocalCorpus(tmp_path))


def test_malformed_jsonl_fails_closed(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text("not json\n" * 20, encoding="utf-8")
    with pytest.raises(PromptError, match="bad.jsonl:"):
        sample_prompts(H, SMALL, LocalCorpus(tmp_path))


def test_missing_directory_rejected(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="does not exist"):
        LocalCorpus(tmp_path / "nope")


def test_parquet_and_jsonl_corpora_agree(tmp_path: Path) -> None:
    docs = _docs(20, short_every=4)
    (tmp_path / "j").mkdir()
    (tmp_path / "p").mkdir()
    _write_jsonl(tmp_path / "j" / "shard.jsonl", docs)
    _write_parquet(tmp_path / "p" / "shard.parquet", docs)
    pj, pp = LocalCorpus(tmp_path / "j"), LocalCorpus(tmp_path / "p")
    assert pp.num_rows("shard.parquet") == 20
    assert list(pp.read("shard.parquet", 7)) == docs[7:]  # crosses row-group boundaries
    for i in range(5):
        # same rows, same cut draws except the shard name: compare the documents chosen
        a = sample_prompts(_hash(i), SMALL, pj)
        b = sample_prompts(_hash(i), SMALL, pp)
        assert len(a) == len(b) == 4
        assert [_doc_id(p) for p in a] == [_doc_id(p) for p in b]


def test_shard_choice_uses_every_shard(tmp_path: Path) -> None:
    for s in range(3):
        _write_jsonl(tmp_path / f"s{s}.jsonl", [d.replace("doc", f"doc of Shard{s}") for d in _docs(8)])
    src = LocalCorpus(tmp_path)
    chosen = set()
    for i in range(30):
        tags = {m.group(0) for p in sample_prompts(_hash(i), SMALL, src) for m in re.finditer(r"Shard\d", p)}
        assert len(tags) == 1  # one shard per round
        chosen |= tags
    assert chosen == {"Shard0", "Shard1", "Shard2"}


def test_parquet_without_text_column_fails_closed(tmp_path: Path) -> None:
    pq.write_table(pa.table({"content": ["x" * 300] * 5}), tmp_path / "x.parquet")
    with pytest.raises(PromptError, match="'text' column"):
        sample_prompts(H, SMALL, LocalCorpus(tmp_path))


def test_wrap_reads_every_row_exactly_once(tmp_path: Path) -> None:
    # exactly 4 usable documents among 9 rows: every start offset must find all of them, each once
    _write_jsonl(tmp_path / "w.jsonl", _docs(9, short_every=2))
    src = LocalCorpus(tmp_path)
    for i in range(12):
        assert sorted(_doc_id(p) for p in sample_prompts(_hash(i), SMALL, src)) == [1, 3, 5, 7]
