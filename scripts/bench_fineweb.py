"""Bytes and requests one prompt round costs against a FineWeb-shaped shard on a loopback HTTP hub.

Writes one parquet shard in FineWeb's schema (text, id, dump, url, date,
file_path, language, language_score, token_count; snappy, pyarrow defaults)
with English-like documents (Zipf words, log-normal lengths around 3,000
characters, like FineWeb's ~670 GPT-2 tokens per document), serves it through a
minimal stand-in of the hub's dataset routes (revision info, tree listing,
``resolve`` with HTTP Range), and runs the real ``eval.fineweb.FineWebSource``
(``HfApi.list_repo_tree`` + ``HfFileSystem`` ranged reads) for several rounds,
each with a different block hash. Counts every byte the server sends.

    .venv/bin/python -m scripts.bench_fineweb [--rows 60000] [--rows-per-group 1000] [--rounds 5] [--fsspec-defaults]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import statistics
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from eval.fineweb import FineWebSource
from eval.prompts import sample_prompts
from eval.rules import ContestRules

REPO, REV, FOLDER = "HuggingFaceFW/fineweb", "9" * 40, "sample/10BT"


def write_shard(path: Path, rows: int, rows_per_group: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    vocab = ["".join(rng.choice("etaoinshrdlcumwfgypbvk") for _ in range(rng.randint(2, 9))) for _ in range(20000)]
    weights = [1 / (i + 1) for i in range(len(vocab))]
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, _schema(pa)) as writer:
        for start in range(0, rows, rows_per_group):
            n = min(rows_per_group, rows - start)
            texts = []
            for _ in range(n):
                words = rng.choices(vocab, weights, k=max(20, int(rng.lognormvariate(math.log(420), 0.8))))
                sentences = [" ".join(words[i : i + 14]).capitalize() + "." for i in range(0, len(words), 14)]
                texts.append(" ".join(sentences))
            ids = range(start, start + n)
            writer.write_table(
                pa.table(
                    {
                        "text": texts,
                        "id": [f"<urn:uuid:{hashlib.md5(str(i).encode()).hexdigest()}>" for i in ids],
                        "dump": ["CC-MAIN-2024-10"] * n,
                        "url": [f"https://example.org/page/{i}" for i in ids],
                        "date": ["2024-03-01T12:00:00Z"] * n,
                        "file_path": [f"s3://commoncrawl/crawl-data/{i}.warc.gz" for i in ids],
                        "language": ["en"] * n,
                        "language_score": [0.9] * n,
                        "token_count": [len(t) // 4 for t in texts],
                    },
                    schema=_schema(pa),
                ),
                row_group_size=rows_per_group,
            )


def _schema(pa: Any) -> Any:
    return pa.schema(
        [
            ("text", pa.string()),
            ("id", pa.string()),
            ("dump", pa.string()),
            ("url", pa.string()),
            ("date", pa.string()),
            ("file_path", pa.string()),
            ("language", pa.string()),
            ("language_score", pa.float64()),
            ("token_count", pa.int64()),
        ]
    )


class Hub:
    """The hub's dataset routes, enough for list_repo_tree and HfFileSystem: counts bytes and requests."""

    def __init__(self, root: Path) -> None:
        self.root, self.sent, self.requests = root, 0, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                hub.requests.append(self.path)
                files = sorted(p for p in hub.root.rglob("*") if p.is_file())
                if re.match(rf"^/api/datasets/{REPO}/revision/{REV}$", self.path):
                    return self._send(200, json.dumps({"id": REPO, "sha": REV}).encode())
                if self.path.startswith(f"/api/datasets/{REPO}/tree/{REV}/"):
                    body = [
                        {
                            "type": "file",
                            "path": p.relative_to(hub.root).as_posix(),
                            "size": p.stat().st_size,
                            "oid": "0" * 40,
                        }
                        for p in files
                    ]
                    return self._send(200, json.dumps(body).encode())
                m = re.match(rf"^/datasets/{REPO}/resolve/{REV}/(.+)$", self.path)
                if not m:
                    return self._send(404, b"{}", {"X-Error-Code": "EntryNotFound"})
                data = (hub.root / m.group(1)).read_bytes()
                a, b = self.headers["Range"].removeprefix("bytes=").split("-")
                chunk = data[int(a) : int(b) + 1]
                hub.sent += len(chunk)
                self._send(206, chunk, {"Content-Range": f"bytes {a}-{int(a) + len(chunk) - 1}/{len(data)}"})

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=60000)
    ap.add_argument("--rows-per-group", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--fsspec-defaults",
        action="store_true",
        help="open shards with HfFileSystem's default buffering (5 MiB read-ahead), for comparison",
    )
    args = ap.parse_args()
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = False
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / FOLDER / "000_00000.parquet"
        write_shard(shard, args.rows, args.rows_per_group)
        md = pq.ParquetFile(shard).metadata
        chunks = [md.row_group(g).column(0).total_compressed_size for g in range(md.num_row_groups)]
        groups = [md.row_group(g).total_byte_size for g in range(md.num_row_groups)]
        hub = Hub(Path(tmp))
        rules = ContestRules(dataset=REPO, dataset_revision=REV, dataset_path=FOLDER)
        src = FineWebSource(rules, endpoint=hub.url, cache_dir=Path(tmp) / "listings")
        if args.fsspec_defaults:
            from huggingface_hub import HfFileSystem

            fs = HfFileSystem(endpoint=hub.url, token=False)
            src = FineWebSource(
                rules,
                endpoint=hub.url,
                cache_dir=Path(tmp) / "listings",
                open_file=lambda p, n: fs.open(f"datasets/{REPO}@{REV}/{p}", "rb"),
            )
        per_round, reqs = [], []
        for i in range(args.rounds):
            before, n_before = hub.sent, len(hub.requests)
            prompts = sample_prompts("0x" + hashlib.sha256(f"round-{i}".encode()).hexdigest(), rules, src)
            per_round.append(hub.sent - before)
            reqs.append(len(hub.requests) - n_before)
            assert len(prompts) == rules.prompts_per_round
        mib = 1 << 20
        print(
            json.dumps(
                {
                    "shard_bytes": shard.stat().st_size,
                    "rows": md.num_rows,
                    "row_groups": md.num_row_groups,
                    "footer_bytes": md.serialized_size,
                    "text_chunk_bytes_median": statistics.median(chunks),
                    "row_group_bytes_uncompressed_median": statistics.median(groups),
                    "bytes_first_round": per_round[0],
                    "bytes_later_rounds_median": statistics.median(per_round[1:] or [0]),
                    "bytes_per_round": per_round,
                    "requests_per_round": reqs,
                    "first_round_MiB": round(per_round[0] / mib, 2),
                    "shard_MiB": round(shard.stat().st_size / mib, 1),
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
