"""``speculabel serve`` as a user runs it: a real server in a subprocess on a free 127.0.0.1
port, with cheap plugin backends (``serve_fakes``: two keyword workers and a keyword judge)
loaded through the ``speculabel.backends`` entry points, real HTTP clients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import serve_fakes
import speculabel
from speculabel.backends.openai.local_server import free_port

KEY = "sk-test-serve-0123456789abcdef"
TEXTS = ["good", "bad", "so so", "maybe good", "good drift"]
#: the label each text gets: workers agree on all but "maybe good" (the judge: positive)
EXPECTED = {"good": "positive", "bad": "negative", "so so": "neutral", "maybe good": "positive",
            "good drift": "positive"}


class Server:
    """One ``speculabel serve`` subprocess."""

    def __init__(self, tmp: Path, log: Path, *extra: str, key: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        plugin = serve_fakes.install(tmp / "plugin")
        here = Path(__file__).parent
        src = Path(speculabel.__file__).parents[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(plugin), str(here), str(src), os.environ.get("PYTHONPATH", "")])}
        if key:
            env["SERVE_TEST_KEY"] = KEY
        args = [sys.executable, "-m", "speculabel", "serve", "--workers", "kw:a,kw:b",
                "--judge", "oracle:x", "--port", str(self.port), "--log", str(log),
                *(["--api-key-env", "SERVE_TEST_KEY"] if key else []), *extra]
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.headers = {"Authorization": f"Bearer {KEY}"} if key else {}
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server ended: {self.proc.communicate()[1][-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail("the server was not ready after 60 s")

    def post(self, body: Any, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", self.headers)
        return httpx.post(f"{self.url}/v1/classify", json=body, headers=headers, timeout=30, **kw)

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


def log_items(log: Path) -> list[dict[str, Any]]:
    return [x for x in map(json.loads, log.read_text().splitlines()) if "seq" in x]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serve")
    srv = Server(tmp, tmp / "log.jsonl", "--audit-target", "0.5", "--audit-rate", "0.2")
    srv.log = tmp / "log.jsonl"  # type: ignore[attr-defined]
    yield srv
    code, err = srv.stop()
    assert code == 0, err
    assert KEY not in err and KEY not in srv.log.read_text()  # type: ignore[attr-defined]


def clients(srv: Server, n_clients: int, n_requests: int, n_items: int,
            stop: threading.Event | None = None) -> dict[str, list[str]]:
    """Each client sends its requests one after another; returns every answered request's ids
    (checking each answer: in order, one record per item, the expected label)."""
    answered: dict[str, list[str]] = {}
    failures: list[str] = []

    def run(c: int) -> None:
        with httpx.Client(headers=srv.headers, timeout=30) as http:
            for r in range(n_requests):
                if stop is not None and stop.is_set():
                    return
                items = [{"id": f"c{c}-r{r}-i{i}", "text": TEXTS[(c + r + i) % len(TEXTS)]}
                         for i in range(n_items)]
                try:
                    resp = http.post(f"{srv.url}/v1/classify", json={"items": items})
                except httpx.HTTPError:
                    return  # the server went away (SIGTERM): this request was not answered
                if resp.status_code == 503:
                    return
                if resp.status_code != 200:
                    failures.append(f"{resp.status_code}: {resp.text}")
                    return
                recs = resp.json()["records"]
                if [x["id"] for x in recs] != [x["id"] for x in items]:
                    failures.append(f"out of order: {[x['id'] for x in recs]}")
                for it, rec in zip(items, recs, strict=True):
                    if rec["label"] != EXPECTED[it["text"]]:
                        failures.append(f"{it}: {rec['label']}")
                answered[f"c{c}-r{r}"] = [x["id"] for x in items]

    threads = [threading.Thread(target=run, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
    return answered


def test_eight_clients_are_answered_in_order_and_logged_once(server: Server) -> None:
    answered = clients(server, 8, 10, 5)
    assert len(answered) == 80
    ids = [x["id"] for x in log_items(server.log)]  # type: ignore[attr-defined]
    want = [i for req in answered.values() for i in req]
    assert sorted(i for i in ids if i in set(want)) == sorted(want)  # each exactly once
    metrics = httpx.get(f"{server.url}/metrics", headers=server.headers).text
    assert 'speculabel_requests_total{path="/v1/classify",status="200"}' in metrics
    items = float(next(x for x in metrics.splitlines() if x.startswith("speculabel_items_total"))
                  .split()[-1])
    assert items >= 400
    batches = float(next(x for x in metrics.splitlines()
                         if x.startswith("speculabel_batch_items_count")).split()[-1])
    assert batches < 80  # concurrent requests shared micro-batches
    for name in ("speculabel_judge_calls_total", "speculabel_decided_by_workers_total",
                 "speculabel_request_latency_seconds_bucket", 'speculabel_audit{value="lower"}',
                 'speculabel_audit_state{state="checking"}'):
        assert name in metrics


def test_health_says_ready_and_names_the_cascade(server: Server) -> None:
    r = httpx.get(f"{server.url}/healthz")  # open without the key, for load balancers
    assert r.status_code == 200
    assert r.json()["status"] == "ready" and r.json()["workers"] == ["kw:a", "kw:b"]


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"items": [{"id": "1", "txt": "x"}]}, 422, "items[0].txt"),
    ({"items": [{"id": "1"}]}, 422, "items[0].text"),
    ({"items": "good"}, 422, "items"),
    ({"records": []}, 422, "records"),
    ({"items": [{"text": "a"}] * 300}, 413, "items"),
])
def test_a_bad_request_is_a_4xx_naming_the_field(server: Server, body: Any, status: int,
                                                 field: str) -> None:
    r = server.post(body)
    assert r.status_code == status
    assert r.json()["error"]["field"] == field


def test_bad_json_an_oversized_body_and_unknown_paths_are_json_errors(server: Server) -> None:
    r = httpx.post(f"{server.url}/v1/classify", content=b"{oops", headers=server.headers)
    assert r.status_code == 400 and r.json()["error"]["field"] == "body"
    big = json.dumps({"items": [{"text": "x" * (2 << 20)}]})
    r = httpx.post(f"{server.url}/v1/classify", content=big, headers=server.headers)
    assert r.status_code == 413 and r.json()["error"]["field"] == "body"
    assert httpx.get(f"{server.url}/v1/nothing", headers=server.headers).status_code == 404
    assert httpx.get(f"{server.url}/v1/classify", headers=server.headers).status_code == 405


def test_an_empty_text_gets_an_input_record_at_its_place(server: Server) -> None:
    r = server.post({"items": [{"id": "a", "text": "good"}, {"id": "b", "text": " "}]})
    recs = r.json()["records"]
    assert [x["id"] for x in recs] == ["a", "b"]
    assert recs[0]["label"] == "positive" and recs[1]["error_kind"] == "input"


def test_the_api_key_is_required_and_never_echoed(server: Server) -> None:
    body = {"items": [{"text": "good"}]}
    assert server.post(body, headers={}).status_code == 401
    r = server.post(body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["field"] == "authorization"
    assert KEY not in r.text
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert server.post(body).status_code == 200


def test_sigterm_mid_load_loses_nothing_answered_and_a_restart_goes_on(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    srv = Server(tmp_path, log, "--max-wait-ms", "5")
    stop = threading.Event()
    result: dict[str, dict[str, list[str]]] = {}
    load = threading.Thread(target=lambda: result.update(a=clients(srv, 8, 200, 5, stop)))
    load.start()
    deadline = time.time() + 60
    while time.time() < deadline and len(log_items(log)) < 200:
        time.sleep(0.05)
    srv.proc.send_signal(signal.SIGTERM)  # mid-load: clients are still sending
    code, err = srv.stop()
    stop.set()
    load.join()
    assert code == 0, err
    answered = [i for req in result["a"].values() for i in req]
    assert 40 <= len(answered) < 8 * 200 * 5
    ids = [x["id"] for x in log_items(log)]
    assert len(ids) == len(set(ids))  # nothing twice
    assert set(answered) <= set(ids)  # nothing answered is lost
    seqs = [x["seq"] for x in log_items(log)]
    assert seqs == list(range(len(seqs)))
    assert json.loads(log.read_text().splitlines()[-1])["event"] == "stop"

    again = Server(tmp_path, log)
    r = again.post({"items": [{"id": "after-restart", "text": "bad"}]})
    assert r.status_code == 200 and r.json()["records"][0]["label"] == "negative"
    code, err = again.stop()
    assert code == 0, err
    items = log_items(log)
    assert items[-1]["id"] == "after-restart" and items[-1]["seq"] == len(seqs)
    starts = [x for x in map(json.loads, log.read_text().splitlines()) if x.get("event") == "start"]
    assert len(starts) == 2 and starts[1]["next_seq"] == len(seqs)


def test_a_log_that_is_not_ours_and_a_missing_key_are_refused_before_loading(tmp_path: Path) -> None:
    table = tmp_path / "input.csv"
    table.write_text("id,text\n1,good\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(speculabel.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    base = [sys.executable, "-m", "speculabel", "serve", "--workers", "vader", "--judge",
            "qwen2.5-1.5b", "--port", str(free_port())]
    r = subprocess.run([*base, "--log", str(table)], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "not a speculabel serve log" in r.stderr
    assert "Traceback" not in r.stderr and table.read_text() == "id,text\n1,good\n"
    r = subprocess.run([*base, "--log", str(tmp_path / "l.jsonl"), "--api-key-env",
                        "SPECULABEL_NO_SUCH_VAR"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "SPECULABEL_NO_SUCH_VAR" in r.stderr


def test_a_refuted_certificate_shows_in_metrics_and_log_and_the_judge_takes_over(
        tmp_path: Path) -> None:
    """The workers say positive on "good drift", the judge negative: the audit (every item,
    in the background) refutes a 0.9 certificate, says so, and every item goes to the judge."""
    log = tmp_path / "log.jsonl"
    srv = Server(tmp_path, log, "--audit-target", "0.9", "--audit-scope", "workers",
                 "--audit-rate", "1", "--audit-alpha", "0.1", "--fallback-to-judge", key=False)
    try:
        first = srv.post({"items": [{"id": f"d{i}", "text": "good drift"} for i in range(20)]})
        assert [r["decided_by"] for r in first.json()["records"]] == ["workers"] * 20
        deadline, metrics = time.time() + 30, ""
        while time.time() < deadline:
            metrics = httpx.get(f"{srv.url}/metrics").text
            if 'speculabel_audit_state{state="violated"} 1.0' in metrics:
                break
            time.sleep(0.1)
        assert 'speculabel_audit_state{state="violated"} 1.0' in metrics
        assert 'speculabel_audit{value="force_judge"} 1.0' in metrics
        after = srv.post({"items": [{"id": "z", "text": "good drift"}]}).json()["records"][0]
        assert after["decided_by"] == "judge" and after["label"] == "negative"
    finally:
        code, err = srv.stop()
    assert code == 0, err
    events = [x for x in map(json.loads, log.read_text().splitlines())
              if x.get("event") == "audit_state"]
    assert events and events[0]["change"] == "violated" and "refuted" in events[0]["message"]
