"""Every contest constant in one frozen, typed object.

The rules travel with each job to the pod, are stored next to each round and
are published by the API, so a miner can reproduce any decision exactly.
Defaults follow the live subnet this project learns from.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

QWEN35_ARCHITECTURES: tuple[str, ...] = (
    "Qwen3_5ForCausalLM",
    "Qwen3_5ForConditionalGeneration",
    "Qwen3_5MoeForCausalLM",
    "Qwen3_5MoeForConditionalGeneration",
)

# Fixed texts on which every model's logit fingerprint is taken. They never
# change between rounds, so fingerprints are comparable across the whole
# history of the subnet (functional-copy detection, LESSONS 4).
CANARY_PROMPTS: tuple[str, ...] = (
    "The history of the river valley begins with the first farmers who",
    "In mathematics, a prime number is a natural number greater than one that",
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "Dear customer, thank you for your recent order. Unfortunately,",
)


FINEWEB_REVISION = "9bb295ddab0e05d785b879661af7260fed5140fc"
"""A commit of ``HuggingFaceFW/fineweb`` whose ``sample/10BT`` holds the 15 shards ``000_00000`` .. ``014_00000``.

Check it before a live launch (``HfApi().dataset_info("HuggingFaceFW/fineweb", revision=...)``); a rules file
may pin another one. A revision the hub does not know fails every round loudly and judges nobody.
"""


class RulesError(ValueError):
    """Raised when a rules document is malformed or nonsensical."""


class ContestRules(BaseModel):
    """The contest, as data. Frozen: a round is judged by exactly one of these."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    version: int = Field(4, ge=1, description="Bumped whenever a scoring rule changes.")

    # Teacher and vocabulary.
    teacher_repo: str = Field("Qwen/Qwen3.5-35B-A3B", min_length=3, max_length=96)
    teacher_revision: str | None = Field(None, pattern=r"^[0-9a-f]{40}$")
    vocab_size: int = Field(248_320, ge=2, le=4_000_000)

    # Admission.
    max_params: int = Field(5_250_000_000, ge=1)
    allowed_architectures: tuple[str, ...] = Field(QWEN35_ARCHITECTURES, min_length=1)
    allowed_dtypes: tuple[Literal["F32", "BF16", "F16"], ...] = ("F32", "BF16", "F16")

    # Scoring.
    max_kl: float = Field(2.0, gt=0.0, description="Mean KL above this disqualifies (KL_TOO_HIGH).")
    epsilon: float = Field(0.01, ge=0.0, lt=1.0, description="Relative margin a challenger must win by.")
    alpha: float = Field(0.05, gt=0.0, lt=0.5, description="Paired one-sided test level for dethroning.")
    prompts_per_round: int = Field(40, ge=2, le=1024)
    max_new_tokens: int = Field(512, ge=1, le=8192)
    max_prompt_tokens: int = Field(1024, ge=1, le=32_768)
    teacher_decoding: Literal["greedy"] = "greedy"
    generation_batch_prompts: int = Field(
        40,
        ge=1,
        le=1024,
        description="Prompts generated together, consecutive in round order. Fixed by the rules, not by memory: "
        "in bf16 a greedy step can sit on a tie, and batch composition may then change a token.",
    )

    # Early stopping of challengers that can no longer win (never the king).
    early_stop_min_prompts: int = Field(8, ge=2)
    early_stop_alpha: float = Field(0.001, gt=0.0, lt=0.5)

    # Prompt sampling.
    dataset: str = Field("HuggingFaceFW/fineweb", min_length=1, max_length=128)
    dataset_config: str = Field("sample-10BT", max_length=64)  # the card's name for ``dataset_path`` (a label)
    dataset_split: str = Field("train", max_length=32)  # a label too: what is read is dataset_path @ dataset_revision
    prompt_min_chars: int = Field(200, ge=1)
    prompt_max_chars: int = Field(2000, ge=16, le=100_000)

    # Functional-copy fingerprint.
    canary_prompts: tuple[str, ...] = Field(CANARY_PROMPTS, min_length=1, max_length=64)
    fingerprint_positions: int = Field(8, ge=1, le=256)
    fingerprint_token_ids: int = Field(64, ge=1, le=4096)
    fingerprint_threshold: float = Field(
        0.02, gt=0.0, description="Mean abs log-prob distance below which two models are one model."
    )

    # Round planning: the shared schedule (rules v4, docs/decisions.md "One schedule for every validator").
    # Slot s covers blocks [s*R, (s+1)*R) and is judged on prompts seeded by the final hash of block s*R;
    # a commitment made at block c enters the first slot starting at or after c + L.
    round_interval_blocks: int = Field(
        150, ge=1, le=100_000, description="R: blocks per round slot (150 x 12 s = 30 min on subtensor)."
    )
    commit_lag_blocks: int = Field(
        50, ge=0, le=100_000, description="L: blocks between a commitment and the first slot that may judge it."
    )
    max_challengers_per_round: int = Field(4, ge=1, le=64, description="Challengers one slot judges at most.")
    max_queued_per_coldkey: int = Field(2, ge=1, description="Challengers of one coldkey in one slot at most.")
    coronation_candidates: int = Field(
        8,
        ge=1,
        le=64,
        description="Models a coronation (no king) re-scores at most: the newest live submissions of the slot "
        "and before, at most max_queued_per_coldkey per coldkey.",
    )

    # --- The prompt dataset, pinned (rules v2) ----------------------------------------------------
    # Prompts must not change when the dataset is republished: every file is read at this commit,
    # and only the files under ``dataset_path`` are listed (never the whole repository).
    dataset_revision: str = Field(
        FINEWEB_REVISION, pattern=r"^[0-9a-f]{40}$", description="Commit of the dataset repo the prompts are read at."
    )
    dataset_path: str = Field(
        "sample/10BT",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*$",
        description="Folder of the dataset repo whose parquet files are the prompt corpus (the config's files).",
    )

    # On-policy guard: a challenger that wins on KL must also hold up on its own greedy text
    # (docs/decisions.md, "On-policy guard"). It runs on the first ``onpolicy_prompts`` prompts
    # of the round (all of them when the round has fewer); 0 turns it off.
    # Decode is launch-bound (a 4B student's step costs the same for 8 prompts or 16): more prompts buy
    # statistical power for free, while each token costs ~40 ms on an H200 (docs/benchmarks.md).
    onpolicy_prompts: int = Field(
        16, ge=0, le=64, description="Prompts (the round's first) each model continues itself; 0 = no guard."
    )
    onpolicy_new_tokens: int = Field(32, ge=1, le=1024, description="Greedy tokens a model writes per prompt.")
    onpolicy_ngram: int = Field(4, ge=1, le=32, description="n of the repeated-n-gram share.")
    onpolicy_nll_margin: float = Field(
        0.5,
        gt=0.0,
        le=100.0,
        description="Stopped when the teacher's NLL of its tokens exceeds the king's x (1 + margin) ...",
    )
    onpolicy_repetition_margin: float = Field(
        0.2, gt=0.0, lt=1.0, description="... or its repeated-n-gram share exceeds the king's + margin ..."
    )
    onpolicy_alpha: float = Field(
        0.05, gt=0.0, lt=0.5, description="... by a one-sided paired test at this level, on the same prompts."
    )

    @model_validator(mode="after")
    def _coherent(self) -> ContestRules:
        if self.prompt_min_chars >= self.prompt_max_chars:
            raise ValueError("prompt_min_chars must be smaller than prompt_max_chars")
        if self.early_stop_min_prompts > self.prompts_per_round:
            raise ValueError("early_stop_min_prompts cannot exceed prompts_per_round")
        if self.onpolicy_prompts == 1:
            raise ValueError("onpolicy_prompts must be 0 (no guard) or at least 2 (a paired test needs two)")
        if len(set(self.allowed_dtypes)) != len(self.allowed_dtypes):
            raise ValueError("allowed_dtypes has duplicates")
        if any(part in (".", "..") for part in self.dataset_path.split("/")):
            raise ValueError("dataset_path must stay inside the dataset repository (no '.' or '..')")
        return self

    def guarded_prompts(self, n_prompts: int) -> int:
        """How many of a round's ``n_prompts`` the on-policy guard covers: the first ``onpolicy_prompts``."""
        return max(0, min(self.onpolicy_prompts, n_prompts))

    # --- serialisation -------------------------------------------------
    def to_json(self) -> str:
        """Canonical compact JSON (sorted keys): stable bytes for hashing and storage."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> ContestRules:
        """Parse and validate; any problem becomes one RulesError naming the field."""
        try:
            return cls.model_validate_json(text)
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            raise RulesError(f"invalid contest rules: {exc}") from exc

    def digest(self) -> str:
        """sha256 of the canonical JSON: names the exact rules a round was judged by."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()


DEFAULT_RULES = ContestRules()
