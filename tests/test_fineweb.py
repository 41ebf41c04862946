"""eval.fineweb: the subset's files only, at the pinned revision, listed once per revision, read by ranges.

Most tests drive the real ``HfApi.list_repo_tree`` and ``HfFileSystem`` against the loopback hub stand-in.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hub_standin import FakeHub, hub_online

from eval.errors import HubAuthError, PromptError, PromptSourceUnavailable, TransientError
from eval.fineweb import FineWebSource
from eval.model_store.local import LocalHub
from eval.prompts import prompt_seed, sample_prompts
from eval.rules import ContestRules

REPO = "HuggingFaceFW/fineweb"
PINNED, REPUBLISHED = "1" * 40, "2" * 40
SMALL = ContestRules(
    prompts_per_round=4,
    early_stop_min_prompts=2,
    prompt_min_chars=40,
    prompt_max_chars=160,
    dataset=REPO,
    dataset_revision=PINNED,
    dataset_path="sample/10BT",
)
H = "0x" + hashlib.sha256(b"block-0").hexdigest()


def _docs(tag: str, count: int) -> list[str]:
    return [
        f"Document {i} of {tag} opens here. " + " ".join(f"Sentence {j} of {tag} says a thing." for j in range(5))
        for i in range(count)
    ]


def _shard(path: Path, docs: list[str], rows_per_group: int = 8) -> None:
    """A parquet file in FineWeb's column layout (text first, then the metadata columns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(docs)
    table = pa.table(
        {
            "text": docs,
            "id": [f"<urn:uuid:{i}>" for i in range(n)],
            "dump": ["CC-MAIN-2024-10"] * n,
            "url": [f"https://example.org/{i}" for i in range(n)],
            "language": ["en"] * n,
            "language_score": [0.9] * n,
            "token_count": [60] * n,
        }
    )
    pq.write_table(table, path, row_group_size=rows_per_group)


def _dataset(root: Path, tag: str, shards: int = 3, rows: int = 40) -> Path:
    for s in range(shards):
        _shard(root / "sample" / "10BT" / f"{s:03d}_00000.parquet", _docs(f"{tag}-shard{s}", rows))
        _shard(root / "data" / "CC-MAIN-2024-10" / f"{s:03d}_00000.parquet", _docs(f"dump-{s}", rows))
    (root / "README.md").write_text("---\nconfigs: []\n---\n")
    return root


@pytest.fixture
def hub(tmp_path, monkeypatch):
    hub_online(monkeypatch)
    fake = FakeHub(LocalHub(tmp_path / "models"))
    fake.add_dataset(REPO, PINNED, _dataset(tmp_path / "pinned", "pinned"))
    fake.add_dataset(REPO, REPUBLISHED, _dataset(tmp_path / "republished", "republished"))
    yield fake
    fake.close()


def test_lists_only_the_subset_folder_at_the_pinned_revision(hub, tmp_path):
    src = FineWebSource(SMALL, endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert src.shards() == [f"sample/10BT/{s:03d}_00000.parquet" for s in range(3)]
    trees = [c for c in hub.calls if "/tree/" in c]
    assert trees == [f"/api/datasets/{REPO}/tree/{PINNED}/sample%2F10BT?recursive=true&expand=false"]
    prompts = sample_prompts(H, SMALL, src)
    # HfFileSystem looks the folder up once per process before its first read (one page, this folder only)
    assert all(f"/tree/{PINNED}/sample%2F10BT?" in c for c in hub.calls if "/tree/" in c)
    assert len(prompts) == 4 and all("pinned-shard" in p for p in prompts)  # never the republished files
    reads = [c for c in hub.calls if "/resolve/" in c]
    assert reads and all(f"/datasets/{REPO}/resolve/{PINNED}/sample/10BT/" in c for c in reads)
    assert not any("/data/" in c or "README" in c for c in hub.calls)  # the other configs are never touched


def test_the_listing_is_kept_on_disk_per_revision(hub, tmp_path):
    cache = tmp_path / "cache"
    first = sample_prompts(H, SMALL, FineWebSource(SMALL, endpoint=hub.url, cache_dir=cache))
    trees = lambda: [c for c in hub.calls if "/tree/" in c and "recursive=true" in c]  # noqa: E731
    assert len(trees()) == 1
    assert sample_prompts(H, SMALL, FineWebSource(SMALL, endpoint=hub.url, cache_dir=cache)) == first
    assert len(trees()) == 1  # a restart lists nothing
    other = SMALL.model_copy(update={"dataset_revision": REPUBLISHED})
    assert (
        FineWebSource(other, endpoint=hub.url, cache_dir=cache).shards()
        == FineWebSource(SMALL, cache_dir=cache, endpoint=hub.url).shards()
    )
    assert len(trees()) == 2  # another revision is listed once too
    (files := sorted(cache.iterdir()))[0].write_text("{not json")  # a damaged cache file is listed again
    assert len(files) == 2 and FineWebSource(SMALL, endpoint=hub.url, cache_dir=cache).shards()
    assert len(trees()) == 3


def test_the_revision_enters_the_digest_and_the_seed():
    other = SMALL.model_copy(update={"dataset_revision": REPUBLISHED})
    assert other.digest() != SMALL.digest() and prompt_seed(H, other) != prompt_seed(H, SMALL)


def test_a_round_reads_the_footer_and_the_needed_text_chunks_not_the_shard(hub, tmp_path):
    root = hub.datasets[REPO][PINNED]
    big = root / "sample" / "10BT" / "000_00000.parquet"
    noise = [d + " " + hashlib.sha256(d.encode()).hexdigest() * 4 + "." for d in _docs("big", 4000)]
    _shard(big, noise, rows_per_group=200)  # 20 row groups of text that does not compress away
    for s in (1, 2):
        (root / "sample" / "10BT" / f"{s:03d}_00000.parquet").unlink()
    src = FineWebSource(SMALL, endpoint=hub.url)
    prompts = sample_prompts(H, SMALL, src)
    assert len(prompts) == 4
    md = pq.ParquetFile(big).metadata
    text_chunks = [md.row_group(g).column(0).total_compressed_size for g in range(md.num_row_groups)]
    sent = hub.bytes_sent["sample/10BT/000_00000.parquet"]
    footer = md.serialized_size + 8
    assert sent <= footer + 64 * 1024 + 2 * max(text_chunks)  # footer (one 64 KiB tail read) + the chunks read
    assert sent < big.stat().st_size / 4


@pytest.mark.parametrize("fault", ["503", "expired_token", "unknown_revision", "refused", "corrupt_parquet"])
def test_every_failure_is_typed_and_transient(hub, tmp_path, fault):
    rules, endpoint = SMALL, hub.url
    if fault == "503":
        hub.fail_next = [503] * 20  # more than the library's own retries
    elif fault == "expired_token":
        hub.valid_tokens = {"hf_renewed"}
    elif fault == "unknown_revision":
        rules = SMALL.model_copy(update={"dataset_revision": "3" * 40})
    elif fault == "refused":
        endpoint = "http://127.0.0.1:9"
    else:
        for p in (hub.datasets[REPO][PINNED] / "sample" / "10BT").iterdir():
            p.write_bytes(b"PAR1 this is not a parquet file PAR1")
    src = FineWebSource(rules, endpoint=endpoint, token="hf_expired" if fault == "expired_token" else None)
    expected = HubAuthError if fault == "expired_token" else PromptSourceUnavailable
    with pytest.raises(expected) as info:
        sample_prompts(H, rules, src)
    assert isinstance(info.value, TransientError) and "HuggingFaceFW/fineweb@" in str(info.value)
    assert "hf_expired" not in str(info.value)
    if fault == "unknown_revision":
        assert "pinned dataset or revision" in str(info.value)


def test_injected_seams_read_in_memory_shards_deterministically():
    blobs = {}
    for s in range(3):
        buf = io.BytesIO()
        pq.write_table(pa.table({"text": _docs(f"mem{s}", 16)}), buf, row_group_size=4)
        blobs[f"sample/10BT/{s:03d}_00000.parquet"] = buf.getvalue()
    opened: list[str] = []

    def open_file(path: str, size: int) -> io.BytesIO:
        assert size == len(blobs[path])
        opened.append(path)
        return io.BytesIO(blobs[path])

    listing = [(p, len(b)) for p, b in reversed(blobs.items())] + [("sample/10BT/README.md", 10)]
    src = FineWebSource(SMALL, list_files=lambda: listing, open_file=open_file)
    assert src.shards() == sorted(blobs)  # sorted, non-parquet files dropped
    a = sample_prompts(H, SMALL, src)
    assert len(a) == 4 and len(set(opened)) == 1  # one shard, nothing else
    assert sample_prompts(H, SMALL, FineWebSource(SMALL, list_files=lambda: listing, open_file=open_file)) == a


def test_no_parquet_files_fails_clearly(tmp_path):
    src = FineWebSource(SMALL, list_files=lambda: [("sample/10BT/README.md", 3)], open_file=lambda p, n: io.BytesIO())
    with pytest.raises(PromptError, match="no parquet files"):
        sample_prompts(H, SMALL, src)
    assert not isinstance(PromptError("x"), TransientError)  # a wrong folder is a configuration error


def test_a_cached_listing_of_another_dataset_is_not_trusted(tmp_path):
    src = FineWebSource(
        SMALL,
        cache_dir=tmp_path,
        list_files=lambda: [("sample/10BT/a.parquet", 5)],
        open_file=lambda p, n: io.BytesIO(),
    )
    assert src.shards() == ["sample/10BT/a.parquet"]
    cached = next(tmp_path.iterdir())
    doc = json.loads(cached.read_text())
    cached.write_text(json.dumps({**doc, "revision": REPUBLISHED, "files": [["evil.parquet", 1]]}))
    again = FineWebSource(
        SMALL,
        cache_dir=tmp_path,
        list_files=lambda: [("sample/10BT/a.parquet", 5)],
        open_file=lambda p, n: io.BytesIO(),
    )
    assert again.shards() == ["sample/10BT/a.parquet"]
