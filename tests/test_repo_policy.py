"""The file policy of admission: which files a repo may hold, and JSON read with bounded depth."""

from __future__ import annotations

import json

import pytest

from eval.model_store.port import FileInfo
from eval.repo_policy import (
    MAX_FILES,
    MAX_JSON_DEPTH,
    Reject,
    check_file_list,
    check_no_forbidden_keys,
    parse_json_object,
)


def files(*paths: str) -> list[FileInfo]:
    return [FileInfo(path=p, size=1, sha256="0" * 64) for p in paths]


GOOD = ("config.json", "model.safetensors", "tokenizer.json")


def test_a_repo_of_configs_shards_and_tokenizer_passes():
    assert sorted(check_file_list(files(*GOOD))) == sorted(GOOD)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ("modeling_custom.py", "forbidden file"),
        ("pytorch_model.bin", "forbidden file"),
        ("weights.pkl", "forbidden file"),
        ("notes.txt", "unexpected file"),
    ],
)
def test_code_pickles_and_strays_are_refused(extra, says):
    with pytest.raises(Reject, match=says) as err:
        check_file_list(files(*GOOD, extra))
    assert err.value.check == "files"


def test_no_weights_no_config_and_too_many_files_are_refused():
    with pytest.raises(Reject, match="no \\*.safetensors"):
        check_file_list(files("config.json", "tokenizer.json"))
    with pytest.raises(Reject, match="config.json is missing"):
        check_file_list(files("model.safetensors"))
    shards = [f"model-{i:05d}.safetensors" for i in range(MAX_FILES)]
    with pytest.raises(Reject, match="files in the repo"):
        check_file_list(files("config.json", *shards))


def test_json_must_be_utf8_and_an_object():
    assert parse_json_object(b'{"a": 1}', "config.json") == {"a": 1}
    with pytest.raises(Reject, match="not UTF-8"):
        parse_json_object(b"\xff\xfe", "config.json")
    with pytest.raises(Reject, match="JSON object"):
        parse_json_object(b"[1, 2]", "config.json")
    with pytest.raises(Reject, match="not valid JSON"):
        parse_json_object(b"{", "config.json")


def test_depth_is_bounded_without_recursion():
    deep = json.dumps(json.loads("[" * (MAX_JSON_DEPTH + 5) + "]" * (MAX_JSON_DEPTH + 5)))
    with pytest.raises(Reject, match="nested deeper"):
        parse_json_object(('{"a": ' + deep + "}").encode(), "config.json")


@pytest.mark.parametrize(
    ("doc", "check"),
    [
        ({"auto_map": {"AutoModel": "x.Model"}}, "config"),
        ({"text_config": {"quantization_config": {"bits": 4}}}, "quantization"),
        ({"layers": [{"compression_config": {}}]}, "quantization"),
    ],
)
def test_remote_code_and_quantization_keys_are_found_at_any_depth(doc, check):
    with pytest.raises(Reject) as err:
        check_no_forbidden_keys(doc, "config.json")
    assert err.value.check == check
