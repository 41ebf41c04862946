"""Admission checks against a real LocalHub: every rejection class, every LESSONS rule that lives here."""

from __future__ import annotations

import json
import os
import struct
import time

import pytest
import torch
from admission_fixtures import TOKENIZER, VOCAB, config, tensors, write_model, write_teacher
from safetensors.torch import save_file

from eval.admission import Admitted, Rejected, TeacherSpec, check_model
from eval.errors import TransientError
from eval.model_store.local import LocalHub
from eval.model_store.port import RepoInaccessible
from eval.rules import ContestRules

RULES = ContestRules(vocab_size=VOCAB)


@pytest.fixture
def hub(tmp_path):
    return LocalHub(tmp_path / "hub")


@pytest.fixture
def teacher(tmp_path):
    return TeacherSpec.from_dir(write_teacher(tmp_path / "teacher"))


def admit(hub, tmp_path, teacher, rules=RULES, existed_before=False, **kw):
    src = write_model(tmp_path / "src", **kw)
    rev = hub.publish("org/m", src)
    return check_model(hub, "org/m", rev, rules, teacher, existed_before=existed_before)


def reject(hub, tmp_path, teacher, check, **kw) -> Rejected:
    out = admit(hub, tmp_path, teacher, **kw)
    assert isinstance(out, Rejected), out
    assert (out.reason, out.check) == ("INVALID", check), out
    return out


def test_good_model_is_admitted(hub, tmp_path, teacher):
    out = admit(hub, tmp_path, teacher, shards=2)
    assert isinstance(out, Admitted)
    assert out.params == sum(t.numel() for t in tensors().values())
    assert out.shards == 2 and out.dtypes == ["F32"] and out.architectures == ["Qwen3_5ForCausalLM"]
    assert len(out.metadata_hash) == 64


def test_teacher_spec_from_store_matches_from_dir(hub, tmp_path, teacher):
    rev = hub.publish("org/teacher", tmp_path / "teacher")
    assert TeacherSpec.from_store(hub, "org/teacher", rev) == teacher
    assert teacher.chat_template_sha256 is not None and teacher.vocab_size == VOCAB


@pytest.mark.parametrize(
    ("repo", "rev"),
    [("org/m", "main"), ("org/m", "abc1234"), ("org/m", "A" * 40), ("https://x/y", "0" * 40), ("a/../b", "0" * 40)],
)
def test_format(hub, teacher, repo, rev):
    out = check_model(hub, repo, rev, RULES, teacher)
    assert (out.reason, out.check) == ("INVALID", "format")


def test_missing_repo_invalid_if_never_existed_removed_if_it_had(hub, tmp_path, teacher):
    rev = hub.publish("org/m", write_model(tmp_path / "src"))
    assert isinstance(check_model(hub, "org/m", rev, RULES, teacher), Admitted)
    hub.delete("org/m")
    never = check_model(hub, "org/m", rev, RULES, teacher)
    gone = check_model(hub, "org/m", rev, RULES, teacher, existed_before=True)
    assert (never.reason, never.check) == ("INVALID", "availability")
    assert (gone.reason, gone.check) == ("REMOVED", "availability")


def test_missing_revision_is_definite(hub, tmp_path, teacher):
    hub.publish("org/m", write_model(tmp_path / "src"))
    out = check_model(hub, "org/m", "1" * 40, RULES, teacher, existed_before=True)
    assert (out.reason, out.check) == ("REMOVED", "availability")


class _FlakyStore:
    """Wraps a store and raises a chosen error from files()."""

    def __init__(self, inner, exc):
        self.inner, self.exc = inner, exc

    def files(self, repo, revision):
        raise self.exc

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_transient_errors_propagate_never_reject(hub, tmp_path, teacher):
    # LESSONS 21: a 429/503/timeout must not turn into a disqualification.
    rev = hub.publish("org/m", write_model(tmp_path / "src"))
    with pytest.raises(TransientError):
        check_model(_FlakyStore(hub, TransientError("503")), "org/m", rev, RULES, teacher, existed_before=True)
    out = check_model(_FlakyStore(hub, RepoInaccessible("gated")), "org/m", rev, RULES, teacher, existed_before=True)
    assert out.reason == "REMOVED"


@pytest.mark.parametrize(
    "name",
    [
        "modeling_qwen.py",
        "pytorch_model.bin",
        "model.pt",
        "x.pth",
        "x.ckpt",
        "x.pkl",
        "x.gguf",
        "x.onnx",
        "tf_model.h5",
        "flax_model.msgpack",
        "sub/tokenization.py",
    ],
)
def test_forbidden_files(hub, tmp_path, teacher, name):
    # LESSONS 7/8: remote code and pickle formats (a huge .bin beside a tiny decoy safetensors).
    src = write_model(tmp_path / "src")
    (src / name).parent.mkdir(parents=True, exist_ok=True)
    (src / name).write_bytes(b"x")
    rev = hub.publish("org/m", src)
    out = check_model(hub, "org/m", rev, RULES, teacher)
    assert (out.reason, out.check) == ("INVALID", "files") and "forbidden" in out.detail


def test_unknown_file_and_missing_pieces(hub, tmp_path, teacher):
    src = write_model(tmp_path / "src")
    (src / "notes.txt").write_text("hi")
    rev = hub.publish("org/m", src)
    assert check_model(hub, "org/m", rev, RULES, teacher).check == "files"
    (src / "notes.txt").unlink()
    (src / "config.json").unlink()
    assert "config.json" in check_model(hub, "org/m", hub.publish("org/m", src), RULES, teacher).detail


def test_ten_thousand_tiny_files(hub, tmp_path, teacher):
    rev = hub.publish("org/m", write_model(tmp_path / "src"))
    many = hub.root / "org/m" / rev / "junk"  # placed straight into the hub: the repo itself is hostile
    many.mkdir()
    for i in range(10_000):
        (many / f"{i}.json").write_bytes(b"{}")
    t0 = time.perf_counter()
    out = check_model(hub, "org/m", rev, RULES, teacher)
    assert (out.reason, out.check) == ("INVALID", "files") and "10" in out.detail
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize(
    ("target", "word"),
    [
        ("/etc/passwd", "outside"),
        ("../" * 40 + "etc/hostname", "outside"),
        ("missing.json", "dangling"),
        ("README.md", "resolved"),
    ],
)
def test_symlink_escaping_repo_rejected(hub, tmp_path, teacher, target, word):
    rev = hub.publish("org/m", write_model(tmp_path / "src"))
    os.symlink(target, hub.root / "org/m" / rev / "README.md")  # the last one points at itself: a loop
    out = check_model(hub, "org/m", rev, RULES, teacher)
    assert (out.reason, out.check) == ("INVALID", "files") and word in out.detail, out


@pytest.mark.parametrize(
    ("cfg", "check"),
    [
        (config(architectures=["LlamaForCausalLM"]), "architecture"),
        (config(architectures="Qwen3_5ForCausalLM"), "config"),
        ({k: v for k, v in config().items() if k != "architectures"}, "config"),
        (config(auto_map={"AutoModelForCausalLM": "modeling.Model"}), "config"),  # LESSONS 7
        (config(quantization_config={"quant_method": "gptq"}), "quantization"),  # LESSONS 9
        (config(text_config={"sub": {"quantization_config": {"bits": 4}}}), "quantization"),  # nested
        (config(compression_config={"format": "pack-quantized"}), "quantization"),  # compressed-tensors' older key
        (config(vocab_size=VOCAB + 1), "vocab"),
        (config(text_config={"vocab_size": VOCAB * 2}), "vocab"),  # LESSONS 8: nested text_config is read
        ({k: v for k, v in config().items() if k != "vocab_size"}, "config"),
        (config(text_config="qwen"), "config"),  # not an object: would only fail later, on the pod
        (config(text_config=[{"vocab_size": VOCAB}]), "config"),
        (config(architectures=[["Qwen3_5ForCausalLM"]]), "config"),
        (config(vocab_size=True), "config"),
    ],
)
def test_config_rules(hub, tmp_path, teacher, cfg, check):
    reject(hub, tmp_path, teacher, check, cfg=cfg)


def test_vocab_only_in_text_config_is_accepted(hub, tmp_path, teacher):
    cfg = {k: v for k, v in config().items() if k != "vocab_size"} | {"text_config": {"vocab_size": VOCAB}}
    assert isinstance(admit(hub, tmp_path, teacher, cfg=cfg), Admitted)


@pytest.mark.parametrize(
    "raw",
    [
        b"[1, 2, 3]",
        b'"just a string"',
        b"null",
        b"{broken",
        b"\xff\xfe\x00{}",
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps(config(deep=json.loads("[" * 50 + "]" * 50))).encode(),
        b"{" + b" " * (2 << 20) + b"}",
    ],
)
def test_hostile_configs(hub, tmp_path, teacher, raw):
    src = write_model(tmp_path / "src")
    (src / "config.json").write_bytes(raw)
    out = check_model(hub, "org/m", hub.publish("org/m", src), RULES, teacher)
    assert (out.reason, out.check) in {("INVALID", "config"), ("INVALID", "files")}, out
    assert out.detail


def test_tokenizer_must_be_byte_identical(hub, tmp_path, teacher):
    # LESSONS 10: a one-byte difference (here, whitespace) fails closed.
    tok = dict(TOKENIZER, **{"tokenizer.json": TOKENIZER["tokenizer.json"] + " "})
    assert "tokenizer.json" in reject(hub, tmp_path, teacher, "tokenizer", tokenizer=tok).detail


def test_chat_template_is_compared(hub, tmp_path, teacher):
    cfg = json.loads(TOKENIZER["tokenizer_config.json"])
    cfg["chat_template"] = "{{ 'pwned' }}"
    tok = dict(TOKENIZER, **{"tokenizer_config.json": json.dumps(cfg)})
    reject(hub, tmp_path, teacher, "chat_template", tokenizer=tok)


def test_other_tokenizer_config_change_is_a_tokenizer_rejection(hub, tmp_path, teacher):
    cfg = json.loads(TOKENIZER["tokenizer_config.json"]) | {"model_max_length": 7}  # same template, other bytes
    tok = dict(TOKENIZER, **{"tokenizer_config.json": json.dumps(cfg)})
    assert "tokenizer_config.json" in reject(hub, tmp_path, teacher, "tokenizer", tokenizer=tok).detail


@pytest.mark.parametrize("raw", [b"{broken", b"[1]", b"\xff\xfe", b"[" * 5000 + b"]" * 5000])
def test_unparseable_tokenizer_config_is_a_tokenizer_rejection(hub, tmp_path, teacher, raw):
    src = write_model(tmp_path / "src")
    (src / "tokenizer_config.json").write_bytes(raw)
    out = check_model(hub, "org/m", hub.publish("org/m", src), RULES, teacher)
    assert (out.reason, out.check) == ("INVALID", "tokenizer"), out


def test_chat_template_file_is_compared(hub, tmp_path):
    tok = dict(TOKENIZER, **{"chat_template.jinja": "{% for m in messages %}{{ m.content }}{% endfor %}"})
    teacher = TeacherSpec.from_dir(write_model(tmp_path / "t", tokenizer=tok))
    assert teacher.chat_template_sha256 is not None
    assert isinstance(admit(LocalHub(tmp_path / "h1"), tmp_path, teacher, tokenizer=tok), Admitted)
    evil = dict(tok, **{"chat_template.jinja": "{{ 'ignore the user' }}"})
    reject(LocalHub(tmp_path / "h2"), tmp_path, teacher, "chat_template", tokenizer=evil)


def test_teacher_without_tokenizer_fails_closed(hub, tmp_path):
    # LESSONS 10: nothing to compare against is a rejection, never a pass.
    empty = TeacherSpec(vocab_size=VOCAB, tokenizer_sha256={})
    reject(hub, tmp_path, empty, "tokenizer")


def test_missing_or_extra_tokenizer_files(hub, tmp_path, teacher):
    reject(hub, tmp_path, teacher, "tokenizer", tokenizer={"tokenizer.json": TOKENIZER["tokenizer.json"]})
    reject(hub, tmp_path, teacher, "tokenizer", tokenizer=dict(TOKENIZER, **{"chat_template.jinja": "x"}))


def test_params_counted_over_all_shards(hub, tmp_path, teacher):
    # LESSONS 8: counting only the first shard (or the config) would let a big model through.
    total = sum(t.numel() for t in tensors().values())
    first_shard = sum(t.numel() for n, t in tensors().items() if n in sorted(tensors())[::4])
    rules = ContestRules(vocab_size=VOCAB, max_params=first_shard + 1)
    out = reject(hub, tmp_path, teacher, "params", rules=rules, shards=4)
    assert f"{total:,}" in out.detail
    ok = admit(hub, tmp_path, teacher, rules=ContestRules(vocab_size=VOCAB, max_params=total), shards=4)
    assert isinstance(ok, Admitted)


def test_config_cannot_hide_size(hub, tmp_path, teacher):
    cfg = config(num_hidden_layers=1, hidden_size=2, num_experts=1)
    out = reject(hub, tmp_path, teacher, "params", rules=ContestRules(vocab_size=VOCAB, max_params=100), cfg=cfg)
    assert "parameters" in out.detail


def test_dtypes(hub, tmp_path, teacher):
    reject(hub, tmp_path, teacher, "dtype", tensor_dict=tensors(torch.float64))
    t = tensors()
    t["model.layers.0.mlp.up_proj.weight"] = t["model.layers.0.mlp.up_proj.weight"].to(torch.int8)
    reject(hub, tmp_path, teacher, "dtype", tensor_dict=t)
    assert isinstance(admit(hub, tmp_path, teacher, tensor_dict=tensors(torch.bfloat16)), Admitted)


@pytest.mark.parametrize(
    "marker",
    [
        "model.layers.0.mlp.up_proj.qweight",
        "model.layers.0.mlp.up_proj.scales",
        "x.weight.absmax",
        "model.layers.0.mlp.up_proj.SCB",
        "model.layers.0.mlp.up_proj.weight_scale",
        "x.weight.quant_state.bitsandbytes__nf4",
        "model.layers.0.mlp.up_proj.qzeros",
        "model.layers.0.mlp.up_proj.g_idx",
        "model.layers.0.mlp.up_proj.weight_scale_inv",
        "model.layers.0.self_attn.q_proj.input_scale",
        "model.layers.0.mlp.up_proj.weight_zero_point",
    ],
)
def test_quantization_marker_tensors(hub, tmp_path, teacher, marker):
    # LESSONS 9: quantization config stripped, markers still in the weights.
    t = tensors() | {marker: torch.zeros(4)}
    reject(hub, tmp_path, teacher, "quantization", tensor_dict=t)


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("model.embed_tokens.weight", (VOCAB - 1, 8)),
        ("model.embed_tokens.weight", (VOCAB * 2, 8)),
        ("lm_head.weight", (VOCAB + 64, 8)),
        ("model.embed_tokens.weight", (VOCAB * 8,)),
        ("model.language_model.embed_tokens.weight", (VOCAB // 2, 8)),
    ],
)
def test_embedding_and_head_rows_must_equal_vocab(hub, tmp_path, teacher, name, shape):
    # config.json says vocab_size = VOCAB; the tensors are what the model really is.
    t = tensors() | {name: torch.zeros(shape)}
    reject(hub, tmp_path, teacher, "embedding", tensor_dict=t)


def test_dtype_rejections_cover_fp8_and_packed_ints(hub, tmp_path, teacher):
    for dtype in (torch.float8_e4m3fn, torch.uint8, torch.int32):
        t = tensors()
        t["model.layers.1.mlp.down_proj.weight"] = t["model.layers.1.mlp.down_proj.weight"].to(dtype)
        reject(hub, tmp_path, teacher, "dtype", tensor_dict=t)
    assert isinstance(admit(hub, tmp_path, teacher, tensor_dict=tensors(torch.float16)), Admitted)


def test_embedding_shape_matches_vocab(hub, tmp_path, teacher):
    t = tensors()
    t["model.embed_tokens.weight"] = torch.zeros(VOCAB - 1, 8)
    reject(hub, tmp_path, teacher, "embedding", tensor_dict=t)
    t = tensors()
    del t["model.embed_tokens.weight"]
    reject(hub, tmp_path, teacher, "embedding", tensor_dict=t)


def _raw_shard(header: bytes, data: bytes = b"", length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header) if length is None else length) + header + data


@pytest.mark.parametrize(
    "blob",
    [
        _raw_shard(b"{}", length=2**64 - 8),  # "negative" length
        _raw_shard(b"{}", length=50 * 2**20),  # longer than the file
        _raw_shard(b"{" * 10 + b"x"),  # invalid JSON
        _raw_shard(b"[" * 100_000 + b"]" * 100_000),  # deeply nested header
        _raw_shard(
            json.dumps(
                {
                    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
                }
            ).encode(),
            b"\0" * 12,
        ),
        _raw_shard(json.dumps({"a": {"dtype": "F32", "shape": [1 << 20], "data_offsets": [0, 4 << 20]}}).encode()),
        b"\x01\x02\x03",
    ],
)
def test_hostile_shards(hub, tmp_path, teacher, blob):
    src = write_model(tmp_path / "src")
    (src / "model-extra.safetensors").write_bytes(blob)
    out = check_model(hub, "org/m", hub.publish("org/m", src), RULES, teacher)
    assert (out.reason, out.check) == ("INVALID", "safetensors"), out


def test_truncated_real_shard(hub, tmp_path, teacher):
    src = write_model(tmp_path / "src")
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[:-10])
    out = check_model(hub, "org/m", hub.publish("org/m", src), RULES, teacher)
    assert (out.check, "truncated" in out.detail) == ("safetensors", True)


def test_huge_header_is_bounded(hub, tmp_path, teacher):
    src = write_model(tmp_path / "src")
    header = json.dumps({f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(210_000)})
    (src / "model-00002.safetensors").write_bytes(_raw_shard(header.encode()))
    out = check_model(hub, "org/m", hub.publish("org/m", src), RULES, teacher)
    assert (out.check, "too many" in out.detail) == ("safetensors", True)


def test_duplicate_tensor_across_shards(hub, tmp_path, teacher):
    src = write_model(tmp_path / "src")
    save_file({"model.layers.0.input_layernorm.weight": torch.ones(8)}, str(src / "model-00002.safetensors"))
    reject_out = check_model(hub, "org/m", hub.publish("org/m", src), RULES, teacher)
    assert reject_out.check == "safetensors" and "more than one shard" in reject_out.detail


def test_index_must_match_headers(hub, tmp_path, teacher):
    src = write_model(tmp_path / "src", shards=2)
    idx = json.loads((src / "model.safetensors.index.json").read_text())
    idx["weight_map"]["ghost.weight"] = "model-00001-of-00002.safetensors"
    (src / "model.safetensors.index.json").write_text(json.dumps(idx))
    assert check_model(hub, "org/m", hub.publish("org/m", src), RULES, teacher).check == "safetensors"


@pytest.mark.parametrize(
    "weight_map",
    [
        {"x": ["model-00001-of-00002.safetensors"]},
        {"x": {"a": 1}},
        {"x": None},
        {"x": 7},
        ["model-00001-of-00002.safetensors"],
        "weights",
    ],
)
def test_hostile_index_values(hub, tmp_path, teacher, weight_map):
    # An unhashable shard name once raised TypeError out of the checker (a crash, retried forever).
    src = write_model(tmp_path / "src", shards=2)
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    out = check_model(hub, "org/m", hub.publish("org/m", src), RULES, teacher)
    assert (out.reason, out.check) == ("INVALID", "safetensors"), out
    assert len(out.detail) < 400


def test_non_utf8_tokenizer_file_just_differs(hub, tmp_path, teacher):
    src = write_model(tmp_path / "src")
    (src / "tokenizer.json").write_bytes(b"\xff\xfe\xfd")
    assert check_model(hub, "org/m", hub.publish("org/m", src), RULES, teacher).check == "tokenizer"


def test_admission_reads_no_tensor_bytes(hub, tmp_path, teacher):
    src = write_model(tmp_path / "src", shards=4)
    rev = hub.publish("org/m", src)
    hub.bytes_read = 0
    assert isinstance(check_model(hub, "org/m", rev, RULES, teacher), Admitted)
    shard_files = sorted(src.glob("*.safetensors"))
    header_bytes = sum(8 + struct.unpack("<Q", p.read_bytes()[:8])[0] for p in shard_files)
    small = sum(p.stat().st_size for p in src.iterdir() if not p.name.endswith(".safetensors"))
    assert hub.bytes_read <= header_bytes + small
    assert hub.bytes_read < header_bytes + small + 1  # and not one tensor byte beyond


def test_metadata_hash_detects_exact_reupload(hub, tmp_path, teacher):
    src = write_model(tmp_path / "src", shards=2)
    a = check_model(hub, "org/a", hub.publish("org/a", src), RULES, teacher)
    b = check_model(hub, "org/b", hub.publish("org/b", src), RULES, teacher)
    assert a.metadata_hash == b.metadata_hash


def _rchar() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("rchar:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux /proc/self/io")
def test_four_shard_admission_reads_no_tensor_data_and_is_fast(hub, tmp_path, teacher):
    # The figure: a 4-shard model, < 50 ms per submission, and not one tensor byte read. The byte count here is
    # the kernel's (every read() of the process), so it does not rest on the store's own accounting.
    big = tensors() | {f"model.layers.{i}.mlp.gate_proj.weight": torch.randn(256, 1024) for i in range(16)}
    src = write_model(tmp_path / "src", shards=4, tensor_dict=big)
    rev = hub.publish("org/m", src)
    shard_bytes = [p.stat().st_size for p in src.glob("*.safetensors")]
    assert len(shard_bytes) == 4 and min(shard_bytes) > 1 << 20  # every shard holds >= 1 MiB of tensor data
    check_model(hub, "org/m", rev, RULES, teacher)  # warm: imports, caches
    times, reads = [], []
    for _ in range(7):
        before, t0 = _rchar(), time.perf_counter()
        out = check_model(hub, "org/m", rev, RULES, teacher)
        times.append(time.perf_counter() - t0)
        reads.append(_rchar() - before)
        assert isinstance(out, Admitted) and out.shards == 4
    assert max(reads) < 256 * 1024, reads  # headers + small files + hub manifest, far below one shard's data
    assert sorted(times)[len(times) // 2] < 0.050, times  # median of 7


def test_mutated_repos_always_get_a_verdict(hub, tmp_path, teacher):
    # LESSONS 18: whatever bytes a repo holds, the checker answers Admitted or Rejected; it never raises.
    import random
    import shutil

    rng = random.Random(1234)
    base = write_model(tmp_path / "base", shards=2)
    targets = [
        "config.json",
        "model.safetensors.index.json",
        "tokenizer_config.json",
        "model-00001-of-00002.safetensors",
    ]
    verdicts = set()
    for i in range(120):
        src = shutil.copytree(base, tmp_path / f"m{i}")
        target = targets[i % len(targets)]
        data = bytearray((src / target).read_bytes())
        limit = 8 + struct.unpack("<Q", data[:8])[0] if target.endswith(".safetensors") else len(data)
        for _ in range(rng.randint(1, 4)):  # flip bytes inside the JSON part (or the header length prefix)
            j = rng.randrange(limit)
            data[j] = rng.choice([rng.randrange(256), *b'{}[]":,0-9e.'])
        (src / target).write_bytes(bytes(data))
        out = check_model(hub, f"org/m{i}", hub.publish(f"org/m{i}", src), RULES, teacher)
        assert isinstance(out, Admitted | Rejected)
        verdicts.add(out.check if isinstance(out, Rejected) else "admitted")
        shutil.rmtree(src)
    assert {"config", "safetensors", "tokenizer", "chat_template"} <= verdicts, verdicts
