"""The OpenAI-compatible HTTP backend.

Two kinds of tests:

* against a tiny fake endpoint in this process (fast, always run): spec parsing, clear start-up
  errors, label scoring from log-probabilities, constrained choice, strict free text, timeouts,
  429 with Retry-After, a dead endpoint, the in-flight bound, the API key never leaking;
* against a real ``python -m llama_cpp.server`` (``@pytest.mark.server``, see
  ``tests/server_fixture.py``): HTTP votes equal in-process votes, a cascade with HTTP workers
  and an in-process judge, a server killed mid-run and restarted, wrong URL / model name.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import pytest

import needs
from fake_openai import Fake
from speculabel.backends.base import BackendError
from speculabel.backends.openai.backend import OpenAIBackend, from_spec, parse_spec
from speculabel.backends.openai.parse import Abstain, label_logprobs, parse_label_strict
from speculabel.records import Item, Vote
from speculabel.tasks import SENTIMENT, SIMILAR_TICKET

pytest_plugins = ["server_fixture", "fake_openai"]

ITEMS = [
    Item(str(i), {"text": t})
    for i, t in enumerate(["I love it", "meh", "worst day ever", "the bus comes at 9", "great!", "ugh", "ok", "fine"])
]


def _records(out: Path) -> list[dict[str, Any]]:
    """The records of a results file (its header lines left out)."""
    return [r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())
            if "speculabel" not in r]


def _backend(url: str, model: str = "m1", **kw: Any) -> OpenAIBackend:
    kw.setdefault("backoff_s", 0.01)
    return OpenAIBackend(f"openai:{model}@{url}", **kw)


# ----------------------------------------------------------------------------- pure helpers
def test_parse_spec() -> None:
    assert parse_spec("openai:qwen2.5-0.5b@http://127.0.0.1:8081/v1/") == (
        "qwen2.5-0.5b",
        "http://127.0.0.1:8081/v1",
    )
    assert parse_spec("openai:llama3.2:1b@http://h:11434/v1") == (
        "llama3.2:1b",
        "http://h:11434/v1",
    )
    for bad in ("openai:m", "openai:@http://x", "openai:m@ftp://x", "m@http://x"):
        with pytest.raises(BackendError):
            parse_spec(bad)


def test_unknown_option_and_missing_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendError, match="unknown option"):
        from_spec("openai:m@http://127.0.0.1:9/v1", max_inflight=3)
    monkeypatch.delenv("SPECULABEL_TEST_KEY", raising=False)
    with pytest.raises(BackendError, match="SPECULABEL_TEST_KEY"):
        from_spec("openai:m@http://127.0.0.1:9/v1", api_key_env="SPECULABEL_TEST_KEY")


def test_label_logprobs_renormalises_over_labels() -> None:
    answers = {"negative": "negative", "neutral": "neutral", "positive": "positive"}
    top = {"negative": -2.0, "neutral": -1.0, "positive": -0.5, "The": -0.1}
    probs = label_logprobs(answers, top)
    z = math.exp(-2.0) + math.exp(-1.0) + math.exp(-0.5)
    assert probs["positive"] == pytest.approx(math.exp(-0.5) / z)
    assert sum(probs.values()) == pytest.approx(1.0)


def test_label_logprobs_multitoken_and_missing() -> None:
    # multi-token answers: the longest returned prefix token scores the label
    answers = {"similar": "same issue", "not_similar": "different issues"}
    top = {"same": -0.2, "s": -3.0, "diff": -1.5, "d": -4.0}
    probs = label_logprobs(answers, top)
    assert probs["similar"] > probs["not_similar"]
    assert probs["similar"] == pytest.approx(1 / (1 + math.exp(-1.3)))
    # a label absent from the top K gets the K-th log-probability (an upper bound)
    probs = label_logprobs({"a": "yes", "b": "no"}, {"yes": -0.1, "maybe": -3.0})
    assert probs["b"] == pytest.approx(math.exp(-3.0) / (math.exp(-0.1) + math.exp(-3.0)))
    # leading-space tokens are accepted when nothing matches exactly
    probs = label_logprobs({"a": "yes", "b": "no"}, {" yes": -0.1, " no": -0.2})
    assert probs["a"] > probs["b"]
    with pytest.raises(Abstain, match="none of the labels"):
        label_logprobs({"a": "yes", "b": "no"}, {"maybe": -0.1})
    with pytest.raises(Abstain, match="share their first token"):
        label_logprobs({"a": "not sure", "b": "not similar"}, {"not": -0.1})


def test_parse_label_strict() -> None:
    assert parse_label_strict(SENTIMENT, " Positive.\n") == "positive"
    assert parse_label_strict(SENTIMENT, '"neutral"') == "neutral"
    assert parse_label_strict(SENTIMENT, "positive, I think") is None
    assert parse_label_strict(SIMILAR_TICKET, "yes") == "similar"
    assert parse_label_strict(SIMILAR_TICKET, "similar") == "similar"


# ----------------------------------------------------------------------------- fake endpoint
def test_check_errors_are_clear(fake: tuple[Fake, str]) -> None:
    _f, url = fake
    with pytest.raises(BackendError, match=r"'nope' is not served at .*it serves: m1, m2"):
        _backend(url, "nope").check()
    with pytest.raises(BackendError, match=r"HTTP 404.*usually ends in /v1"):
        _backend(url.removesuffix("/v1")).check()
    with pytest.raises(BackendError, match=re.escape("cannot reach http://127.0.0.1:9/v1")):
        _backend("http://127.0.0.1:9/v1").score(SENTIMENT, ITEMS[:1])


def test_logprob_votes(fake: tuple[Fake, str]) -> None:
    f, url = fake
    b = _backend(url)
    votes = b.score(SENTIMENT, ITEMS)
    assert b.method == "logprobs"
    assert all(v.label == "positive" and v.method == "logprobs" for v in votes)
    z = math.exp(-2.0) + math.exp(-1.0) + math.exp(-0.5)
    assert votes[0].probs["neutral"] == pytest.approx(math.exp(-1.0) / z)
    req = f.requests[0]
    assert req["messages"] == SENTIMENT.chat_messages(ITEMS[0].fields)
    assert req["max_tokens"] == 1 and req["logprobs"] is True and req["top_logprobs"] == 20
    assert b.fingerprint() == f"openai:m1@{url}"
    b.close()


def test_completion_prompt_scores_spaced_tokens(fake: tuple[Fake, str]) -> None:
    f, url = fake
    b = _backend(url, prompt="completion")
    v = b.score(SENTIMENT, ITEMS[:1])[0]
    assert v.label == "positive"
    assert f.requests[0]["prompt"] == SENTIMENT.completion_prompt(ITEMS[0].fields)
    assert b.fingerprint().endswith(";prompt=completion")


def test_auto_without_logprobs_uses_choice(fake: tuple[Fake, str]) -> None:
    f, url = fake
    f.top = None
    f.choice_text = "neutral"
    b = _backend(url)
    votes = b.score(SENTIMENT, ITEMS[:3])
    assert b.method == "choice" and b.choice_format == "grammar"  # owned_by "me": llama.cpp
    assert [v.label for v in votes] == ["neutral"] * 3
    assert all(v.method == "choice" and v.probs == {} for v in votes)
    assert f.requests[-1]["grammar"] == 'root ::= "negative" | "neutral" | "positive"'


@pytest.mark.parametrize(
    ("fmt", "key"),
    [
        ("structured_outputs", "structured_outputs"),
        ("guided_choice", "guided_choice"),
        ("json_schema", "response_format"),
    ],
)
def test_choice_formats(fake: tuple[Fake, str], fmt: str, key: str) -> None:
    f, url = fake
    b = _backend(url, method="choice", choice_format=fmt)
    v = b.score(SENTIMENT, ITEMS[:1])[0]
    assert v.label == "positive" and v.method == "choice"
    assert key in f.requests[-1]
    f.choice_text = "very positive"  # an endpoint that ignores the constraint
    v = b.score(SENTIMENT, ITEMS[:1])[0]
    assert v.label is None and "not one of the labels" in (v.error or "")


def test_text_is_strict(fake: tuple[Fake, str]) -> None:
    f, url = fake
    f.choice_text = "Negative."
    b = _backend(url, method="text")
    assert b.score(SENTIMENT, ITEMS[:1])[0].label == "negative"
    f.choice_text = "negative or neutral"
    v = b.score(SENTIMENT, ITEMS[:1])[0]
    assert v.label is None and v.method == "text" and "not exactly one label" in (v.error or "")


def test_in_flight_is_bounded(fake: tuple[Fake, str]) -> None:
    f, url = fake
    f.delay_s = 0.1
    b = _backend(url, "m1", max_in_flight=3)
    votes = b.score(SENTIMENT, ITEMS * 2)  # 16 items, 0.1 s each at the server
    assert all(v.label == "positive" for v in votes)
    assert f.max_in_flight == 3  # concurrent, and never more than allowed


def test_a_later_backend_s_smaller_limit_applies_and_closing_it_restores(
    fake: tuple[Fake, str]
) -> None:
    # before: the per-URL semaphore was made once, so a later backend's max_in_flight was ignored
    f, url = fake
    f.delay_s = 0.05
    a = _backend(url, "m1", max_in_flight=4)
    a.score(SENTIMENT, ITEMS)  # the URL's limiter exists and has run at 4
    assert f.max_in_flight == 4
    b = _backend(url, "m2", max_in_flight=1)
    f.max_in_flight = 0
    a.score(SENTIMENT, ITEMS)
    b.score(SENTIMENT, ITEMS)
    assert f.max_in_flight == 1  # every backend on the URL now keeps to the smaller limit
    b.close()
    f.max_in_flight = 0
    a.score(SENTIMENT, ITEMS)
    assert f.max_in_flight == 4
    a.close()


def test_score_inside_running_event_loop(fake: tuple[Fake, str]) -> None:
    _f, url = fake
    b = _backend(url)

    async def main() -> tuple[list[Vote], list[Vote]]:
        return b.score(SENTIMENT, ITEMS[:2]), await b.ascore(SENTIMENT, ITEMS[2:4])

    sync_votes, async_votes = asyncio.run(main())
    assert [v.label for v in sync_votes + async_votes] == ["positive"] * 4


def test_timeout_gives_unavailable_abstention(fake: tuple[Fake, str]) -> None:
    f, url = fake
    b = _backend(url, timeout_s=0.3, max_retries=1)
    b.check()
    f.delay_s = 1.0
    t0 = time.perf_counter()
    v = b.score(SENTIMENT, ITEMS[:1])[0]
    assert time.perf_counter() - t0 < 5.0
    assert v.label is None
    assert v.error is not None and v.error.startswith("unavailable:")
    assert "within 0.3 s" in v.error and "2 attempt(s)" in v.error


def test_429_honours_retry_after(fake: tuple[Fake, str]) -> None:
    f, url = fake
    b = _backend(url)
    b.check()
    f.status = [429, 429]
    f.retry_after = "0.4"
    t0 = time.perf_counter()
    v = b.score(SENTIMENT, ITEMS[:1])[0]
    assert v.label == "positive"
    assert time.perf_counter() - t0 >= 0.8
    assert len(f.requests) == 3


def test_retry_budget_and_client_errors(fake: tuple[Fake, str]) -> None:
    f, url = fake
    b = _backend(url, max_retries=10, retry_budget_s=0.5, backoff_s=0.2)
    b.check()
    f.status = [503] * 20
    t0 = time.perf_counter()
    v = b.score(SENTIMENT, ITEMS[:1])[0]
    assert time.perf_counter() - t0 < 2.0  # not 10 retries with doubling backoff
    assert (v.error or "").startswith("unavailable:") and "retry budget" in (v.error or "")
    f.status = [400]  # a bad request is this item's problem, not the endpoint being down
    v = b.score(SENTIMENT, ITEMS[:1])[0]
    assert v.label is None and (v.error or "").startswith("HTTP 400")
    f.status = [500] * 4  # the server answers, but fails this request every time
    v = b.score(SENTIMENT, ITEMS[:1])[0]
    assert v.label is None and not (v.error or "").startswith("unavailable:")


def test_dead_endpoint_fails_fast_then_recovers(fake: tuple[Fake, str]) -> None:
    f, url = fake
    b = _backend(url, max_retries=3, backoff_s=0.05)
    b.check()
    f.status = [503] * 4 + [503] * 8  # down for one item's four attempts, then 8 more requests
    v = b.score(SENTIMENT, ITEMS[:1])[0]
    assert (v.error or "").startswith("unavailable:") and "4 attempt(s)" in (v.error or "")
    n = len(f.requests)
    votes = b.score(SENTIMENT, ITEMS)
    assert all((v.error or "").startswith("unavailable:") for v in votes)
    assert len(f.requests) - n == len(ITEMS)  # known down: one attempt each, no backoff
    votes = b.score(SENTIMENT, ITEMS[:2])  # back up: the first success closes the breaker
    assert [v.label for v in votes] == ["positive", "positive"]
    assert not b.transport.down


def test_api_key_is_sent_but_never_recorded(fake: tuple[Fake, str], monkeypatch: pytest.MonkeyPatch) -> None:
    f, url = fake
    monkeypatch.setenv("SPECULABEL_TEST_KEY", "sk-secret-123")
    b = _backend(url, api_key_env="SPECULABEL_TEST_KEY")
    votes = b.score(SENTIMENT, ITEMS[:2])
    f.status = [400]
    votes += b.score(SENTIMENT, ITEMS[:1])
    assert set(f.auth) == {"Bearer sk-secret-123"}
    blob = json.dumps([v.to_json() for v in votes]) + repr(b) + b.fingerprint()
    assert "sk-secret" not in blob


def test_registry_loads_openai_specs(fake: tuple[Fake, str]) -> None:
    from speculabel.backends.registry import load_backend

    _f, url = fake
    b = load_backend(f"openai:m2@{url}", max_in_flight=2)
    assert isinstance(b, OpenAIBackend) and b.model == "m2"


# ----------------------------------------------------------------------------- real server
def _tweets(n: int, offset: int = 0) -> list[Item]:
    from speculabel.io.datasets import tweeteval

    return needs.data(lambda: tweeteval("val", limit=offset + n).items[offset:], "tweeteval")


def _in_process(name: str) -> Any:
    from speculabel.backends.registry import load_backend

    return load_backend(name, n_threads=2)


@pytest.mark.server
@pytest.mark.parametrize("model", ["smollm2-135m", "qwen2.5-0.5b"])
def test_http_votes_match_in_process(llama_server: Any, model: str) -> None:
    items = _tweets(8)
    # a generous timeout: the server decodes one request at a time, and a loaded test machine
    # can make a queued request wait long (timeouts have their own tests)
    http = from_spec(llama_server.spec(model), timeout_s=300)
    local = _in_process(model)
    try:
        hv = http.score(SENTIMENT, items)
        lv = local.score(SENTIMENT, items)
    finally:
        local.close()
        http.close()
    assert all(v.method == "logprobs" and v.label is not None for v in hv), [v.error for v in hv]
    # the same model and prompt; llama.cpp's numbers shift with how tokens are batched (the
    # server evaluates each prompt whole, in-process scoring the task prefix apart): up to
    # about 0.04 in probability on these quantized models
    diff = max(abs(h.probs[k] - loc.probs[k]) for h, loc in zip(hv, lv, strict=True) for k in SENTIMENT.label_names)
    assert diff < 0.06, diff
    for h, loc in zip(hv, lv, strict=True):
        top = sorted(loc.probs.values(), reverse=True)
        if top[0] - top[1] > 0.12:  # no near tie: the same label
            assert h.label == loc.label, (h.probs, loc.probs)
    assert http.fingerprint() == f"openai:{model}@{llama_server.base_url}"


@pytest.mark.server
def test_cascade_http_workers_in_process_judge(llama_server: Any) -> None:
    from speculabel.cascade.run import Cascade
    from speculabel.policy import make_policy

    items = _tweets(8, offset=20)
    workers = [
        from_spec(llama_server.spec(m), max_in_flight=4, timeout_s=300) for m in ("smollm2-135m", "qwen2.5-0.5b")
    ]
    judge = _in_process("smollm2-135m")
    cascade = Cascade(SENTIMENT, workers, judge, make_policy("majority"), parallel_workers=True, batch_size=8)
    try:
        records = cascade.classify(items)
    finally:
        cascade.close()
    assert [r.id for r in records] == sorted(r.id for r in records) or len(records) == 8
    assert {r.id for r in records} == {it.id for it in items}
    assert all(r.label in SENTIMENT.label_names and r.error is None for r in records)
    assert all(len(r.votes) == 2 and all(v.method == "logprobs" for v in r.votes) for r in records)
    for r in records:
        assert (r.judge_vote is not None) == (r.decided_by == "judge")
        if r.judge_vote is not None:
            assert r.judge_vote.model == "smollm2-135m"


@pytest.mark.server
def test_wrong_url_and_model_name_real_server(llama_server: Any) -> None:
    with pytest.raises(BackendError, match=re.escape("it serves: smollm2-135m, qwen2.5-0.5b")):
        from_spec(f"openai:smollm2@{llama_server.base_url}").check()
    root = llama_server.base_url.removesuffix("/v1")
    with pytest.raises(BackendError, match="HTTP 404"):
        from_spec(f"openai:smollm2-135m@{root}").check()
    from server_fixture import free_port

    with pytest.raises(BackendError, match=r"cannot reach http://127\.0\.0\.1:\d+/v1"):
        from_spec(f"openai:smollm2-135m@http://127.0.0.1:{free_port()}/v1").check()


@pytest.mark.server
def test_slow_answer_hits_timeout_real_server(llama_server: Any) -> None:
    b = from_spec(llama_server.spec("qwen2.5-0.5b"), timeout_s=0.05, max_retries=1, backoff_s=0.01)
    b.check()  # the model list answers at once; scoring a prompt takes far longer than 50 ms
    v = b.score(SENTIMENT, _tweets(1))[0]
    b.close()
    assert v.label is None and (v.error or "").startswith("unavailable: no answer")


def _cli() -> str:
    import shutil
    import sys

    exe = Path(sys.executable).parent / "speculabel"
    return str(exe) if exe.exists() else (shutil.which("speculabel") or "speculabel")


@pytest.mark.server
def test_cli_names_the_wrong_model(llama_server: Any, tmp_path: Path) -> None:
    import subprocess

    inp = tmp_path / "in.csv"
    inp.write_text("text\nhello\n", encoding="utf-8")
    r = subprocess.run(
        [
            _cli(),
            "classify",
            str(inp),
            "-o",
            str(tmp_path / "out.jsonl"),
            "--text-column",
            "text",
            "--workers",
            f"openai:smolm2@{llama_server.base_url}",
            "--judge",
            "smollm2-135m",
            "--no-votes",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert "'smolm2' is not served" in r.stderr and "smollm2-135m" in r.stderr


@pytest.mark.server
def test_server_killed_mid_run_then_rerun_completes_exactly_once(make_llama_server: Any, tmp_path: Path) -> None:
    """The judge's server dies mid-run: decided items stay, the judge's items are left pending
    (exit 3); after a restart the same command finishes them, each item exactly once."""
    import csv
    import subprocess

    items = _tweets(24, offset=40)
    inp = tmp_path / "in.csv"
    with inp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows([it.id, it.fields["text"]] for it in items)
    out = tmp_path / "out.jsonl"
    srv = make_llama_server(("smollm2-135m",))
    srv.start()
    cfg = tmp_path / "cascade.toml"  # per-model options from the config file
    cfg.write_text(
        f'[models."{srv.spec("smollm2-135m")}"]\ntimeout_s = 300\nmax_in_flight = 2\n',
        encoding="utf-8",
    )
    cmd = [
        _cli(),
        "classify",
        str(inp),
        "--config",
        str(cfg),
        "-o",
        str(out),
        "--task",
        "sentiment",
        "--text-column",
        "text",
        "--id-column",
        "id",
        "--workers",
        "smollm2-135m",
        "--judge",
        srv.spec("smollm2-135m"),
        "--policy",
        "confident-majority",
        "--threshold",
        "0.999",
        "--batch-size",
        "4",
        "--votes",
        str(tmp_path / "votes.sqlite"),
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t_end = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < t_end:
        n = out.read_text(encoding="utf-8").count("\n") - 1 if out.exists() else 0  # header
        if n >= 6:
            srv.kill()
            break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=300)
    assert srv.proc is not None and srv.proc.poll() is not None, "the run ended before the kill"
    written = _records(out)
    assert proc.returncode == 3, err
    assert "not decided" in err
    # an item the judge could not answer has a retryable no_judge record: the rerun decides it
    undecided = [r for r in written if r.get("error_kind") == "no_judge"]
    first = [r for r in written if r.get("error_kind") != "no_judge"]
    assert undecided and all(r["label"] is None and r["decided_by"] is None for r in undecided)
    assert 6 <= len(first) < len(items)
    assert all(r["label"] is not None for r in first)
    assert all(r["decided_by"] == "judge" for r in first)  # threshold 0.999: the judge decides

    srv.start()  # same port
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    final = _records(out)
    ids = [r["id"] for r in final]
    assert sorted(ids) == sorted(it.id for it in items)  # every item exactly once
    assert final[: len(first)] == first  # what was decided before is kept as it was
    assert all(r["label"] in SENTIMENT.label_names and r["error"] is None for r in final)
