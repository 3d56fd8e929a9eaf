"""Per-request records → the `requests` frame → the run summary.

A `RequestRecord` is filled in by the policy process while the request runs (times, bytes, token
counts); nothing here runs on the hot path except attribute updates. Latency definitions:
TTFT = first output token available at the device − arrival; E2E = last token at the device − arrival;
TPOT = (E2E − TTFT) / (n_output_tokens − 1), undefined for a single-token answer.

A failed request carries a `fail_code` from FAIL_CODES, which the summary counts, and a `fail_reason`
with the details (which hop, until when): counting free text would give one key per device and time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import polars as pl

REQUEST_SCHEMA: dict[str, Any] = {
    "request_id": pl.Int64,
    "device": pl.Utf8,
    "policy": pl.Utf8,
    "status": pl.Utf8,
    "fail_code": pl.Utf8,
    "fail_reason": pl.Utf8,
    "t_arrival_s": pl.Float64,
    "ttft_s": pl.Float64,
    "tpot_s": pl.Float64,
    "e2e_s": pl.Float64,
    "n_prompt_tokens": pl.Int64,
    "n_output_tokens": pl.Int64,
    "bytes_up": pl.Int64,
    "bytes_down": pl.Int64,
    "bytes_total": pl.Int64,
    "energy_device_j": pl.Float64,
    "energy_compute_j": pl.Float64,
    "energy_radio_j": pl.Float64,
    "tokens_local": pl.Int64,
    "tokens_llm": pl.Int64,
    "llm_transmissions": pl.Int64,
    "server": pl.Utf8,
    "model": pl.Utf8,
    "charged_as": pl.Utf8,
    "output_text": pl.Utf8,
}

FAIL_CODES: Mapping[str, str] = MappingProxyType({
    "outage": "a link or cell stayed down longer than the transport's outage_timeout_s",
    "retx_exhausted": "a packet was lost more times than the transport's max_retx allows",
    "no_coverage": "a cell member's SNR is below the floor: the device is out of coverage",
    "timeout": "the policy gave up waiting (a deadline passed): interrupted with a TimeoutError",
    "cancelled": "the policy interrupted the request for another reason",
    "transfer_failed": "a transfer failed for a reason this table does not name yet",
})
"""Why a request can fail, code → meaning; `fail_reason` holds the one-line detail."""


@dataclass
class RequestRecord:
    """What one request did. Bytes: `up` leaves the requesting device, `down` reaches it, `total`
    counts every payload the request moved over any link (server-to-server traffic included)."""

    request_id: int
    device: str
    policy: str
    t_arrival_s: float
    status: str = "running"
    fail_code: str = ""
    fail_reason: str = ""
    token_times_s: list[float] = field(default_factory=list)
    n_prompt_tokens: int = 0
    output_ids: list[int] = field(default_factory=list)
    output_text: str = ""
    bytes_up: int = 0
    bytes_down: int = 0
    bytes_total: int = 0
    energy_compute_j: float = 0.0
    energy_radio_j: float = 0.0
    tokens_local: int = 0
    tokens_llm: int = 0
    llm_transmissions: int = 0
    server: str = ""
    model: str = ""
    charged_as: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    """Values of the policy's own columns (`Policy.columns`), by column name."""

    def token_arrived(self, t_s: float, n: int = 1) -> None:
        """`n` output tokens became available at the device at `t_s`."""
        self.token_times_s.extend([t_s] * n)

    def fail(self, code: str, reason: str) -> None:
        """End the request as failed: `code` from FAIL_CODES (what the summary counts), `reason` the
        detail (which hop, until when)."""
        if code not in FAIL_CODES:
            raise ValueError(f"request {self.request_id}: unknown fail code {code!r} "
                             f"(one of {', '.join(FAIL_CODES)})")
        self.status, self.fail_code, self.fail_reason = "failed", code, reason

    def row(self) -> dict[str, Any]:
        times = self.token_times_s
        ok = self.status == "ok" and bool(times)
        ttft = times[0] - self.t_arrival_s if ok else None
        e2e = times[-1] - self.t_arrival_s if ok else None
        n_out = len(times)
        tpot = (e2e - ttft) / (n_out - 1) if ok and n_out > 1 else None
        return {
            "request_id": self.request_id, "device": self.device, "policy": self.policy,
            "status": self.status, "fail_code": self.fail_code, "fail_reason": self.fail_reason,
            "t_arrival_s": self.t_arrival_s,
            "ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e, "n_prompt_tokens": self.n_prompt_tokens,
            "n_output_tokens": n_out, "bytes_up": self.bytes_up, "bytes_down": self.bytes_down,
            "bytes_total": self.bytes_total,
            "energy_device_j": self.energy_compute_j + self.energy_radio_j,
            "energy_compute_j": self.energy_compute_j, "energy_radio_j": self.energy_radio_j,
            "tokens_local": self.tokens_local, "tokens_llm": self.tokens_llm,
            "llm_transmissions": self.llm_transmissions, "server": self.server, "model": self.model,
            "charged_as": self.charged_as, "output_text": self.output_text, **self.extra,
        }


def requests_frame(records: list[RequestRecord], extra_columns: Mapping[str, Any] | None = None
                   ) -> pl.DataFrame:
    """One row per request: the common columns, then the policy's own (null where a request set none)."""
    schema = {**REQUEST_SCHEMA, **(extra_columns or {})}
    rows = [r.row() for r in sorted(records, key=lambda r: r.request_id)]
    return pl.DataFrame(rows, schema=schema)


def _stats(values: pl.Series) -> dict[str, float | None]:
    v = values.drop_nulls().to_numpy()
    if v.size == 0:
        return {"mean": None, "p50": None, "p95": None}
    return {"mean": float(v.mean()), "p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95))}


def summarize(requests: pl.DataFrame) -> dict[str, Any]:
    """The run's headline numbers; ratios are over successful requests, undefined ratios are null."""
    ok = requests.filter(pl.col("status") == "ok")
    n_tokens = int(ok["n_output_tokens"].sum())
    n_llm = int(ok["llm_transmissions"].sum())

    def per_token(total: float) -> float | None:
        return total / n_tokens if n_tokens else None

    failures = requests.filter(pl.col("status") == "failed")["fail_code"].value_counts()
    by_count = sorted(failures.iter_rows(), key=lambda row: (-row[1], row[0]))  # ties: a fixed order
    return {
        "n_requests": requests.height,
        "n_ok": ok.height,
        "n_failed": requests.height - ok.height,
        "fail_reasons": {code: int(n) for code, n in by_count},
        "n_output_tokens": n_tokens,
        "ttft_s": _stats(ok["ttft_s"]),
        "tpot_s": _stats(ok["tpot_s"]),
        "e2e_s": _stats(ok["e2e_s"]),
        "bytes_up": int(ok["bytes_up"].sum()),
        "bytes_down": int(ok["bytes_down"].sum()),
        "bytes_total": int(ok["bytes_total"].sum()),
        "bytes_per_output_token": per_token(float(ok["bytes_total"].sum())),
        "llm_transmission_rate": per_token(float(n_llm)),
        "energy_device_j": float(ok["energy_device_j"].sum()),
        "energy_compute_j": float(ok["energy_compute_j"].sum()),
        "energy_radio_j": float(ok["energy_radio_j"].sum()),
        "energy_per_token_j": per_token(float(ok["energy_device_j"].sum())),
        "tokens_local": int(ok["tokens_local"].sum()),
        "tokens_llm": int(ok["tokens_llm"].sum()),
        "throughput_tokens_per_s": _throughput(ok),
        **_speculative_summary(ok),
        **_floe_summary(ok),
    }


def _speculative_summary(ok: pl.DataFrame) -> dict[str, Any]:
    """Pooled figures of speculative decoding (docs/policies/speculative.md), when the run has them."""
    if "accepted_tokens" not in ok.columns:
        return {}
    drafted, accepted = int(ok["drafted_tokens"].sum()), int(ok["accepted_tokens"].sum())
    return {"speculative": {
        "rounds": int(ok["rounds"].sum()), "round_trips": int(ok["round_trips"].sum()),
        "drafted_tokens": drafted, "accepted_tokens": accepted,
        "accept_rate": accepted / drafted if drafted else None,
        "fallbacks": int(ok["fallback"].sum()), "retries": int(ok["retries"].sum()),
    }}


def _floe_summary(ok: pl.DataFrame) -> dict[str, Any]:
    """Pooled figures of Floe's fusion (docs/policies/floe.md), when the run has them: steps decided with
    the LLM's logits, steps the SLM decided alone because the logits were late or the cloud failed."""
    if "deadline_misses" not in ok.columns:
        return {}
    steps = int(ok["n_output_tokens"].sum())
    misses = int(ok["deadline_misses"].sum())
    return {"floe": {"tokens_fused": int(ok["tokens_fused"].sum()), "deadline_misses": misses,
                     "cloud_failures": int(ok["cloud_failures"].sum()),
                     "deadline_miss_rate": misses / steps if steps else None}}


def _throughput(ok: pl.DataFrame) -> float | None:
    if ok.height == 0:
        return None
    start = float(ok["t_arrival_s"].min())
    end = float((ok["t_arrival_s"] + ok["e2e_s"]).max())
    span = end - start
    return float(ok["n_output_tokens"].sum()) / span if span > 0 and not math.isnan(span) else None


def token_accounting(records: Iterable[RequestRecord], prompt_chars: Mapping[int, int],
                     vocab: Mapping[tuple[str, str], tuple[int, int | None]]) -> list[dict[str, Any]]:
    """Which tokenizer counted the tokens a model was billed for, and how long its tokens ran.

    A cost card bills tokens as if they were the card's, but they were counted by the producing
    model's own tokenizer: the bundled Shakespeare BPE (vocabulary 4,096) cuts text into shorter
    tokens than Qwen3's (151,936), so the same answer costs more tokens here than it would there.
    Reports show this line beside the card's name, so a reader can rescale. Per (model, charged_as)
    that answered at least one request: characters of this run's prompts and answers ÷ the tokens
    they were counted as (prompt tokens + generated tokens, end-of-text included, as billed).

    `prompt_chars` maps request id → characters of its prompt; `vocab` maps (model, charged_as or "")
    → (the model tokenizer's vocabulary size, the card's vocabulary size or None).
    """
    totals: dict[tuple[str, str], list[int]] = {}
    for rec in records:
        if not rec.model:  # failed before its answer was generated: nothing was counted
            continue
        chars_tokens = totals.setdefault((rec.model, rec.charged_as), [0, 0])
        chars_tokens[0] += prompt_chars[rec.request_id] + len(rec.output_text)
        chars_tokens[1] += rec.n_prompt_tokens + len(rec.output_ids)
    rows = []
    for (model, charged_as), (chars, tokens) in sorted(totals.items()):
        tokenizer_vocab, card_vocab = vocab[(model, charged_as)]
        rows.append({"model": model, "tokenizer_vocab": tokenizer_vocab,
                     "chars_per_token": chars / tokens if tokens else None,
                     "charged_as": charged_as or None, "card_vocab": card_vocab})
    return rows
