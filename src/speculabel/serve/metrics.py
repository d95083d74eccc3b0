"""The service's Prometheus metrics, in a registry of its own (nothing global is touched)."""

from __future__ import annotations

from typing import Any

#: request latency buckets, in seconds (a cheap cascade answers in milliseconds, a judge in
#: seconds on a CPU)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
STATES = ("off", "checking", "confirmed", "violated")


class Metrics:
    """Counters the HTTP handlers and the model thread update (prometheus_client's metrics are
    thread-safe); the audit's gauges are set from its latest snapshot when scraped."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.requests = Counter("speculabel_requests", "HTTP requests answered, by path and status",
                                ["path", "status"], registry=r)
        self.items = Counter("speculabel_items", "Items answered", registry=r)
        self.by_workers = Counter("speculabel_decided_by_workers", "Items the workers decided",
                                  registry=r)
        self.judge_calls = Counter("speculabel_judge_calls",
                                   "Items the judge decided on the request path", registry=r)
        self.item_errors = Counter("speculabel_item_errors", "Items answered with an error record",
                                   ["kind"], registry=r)
        self.audit_judge_calls = Counter("speculabel_audit_judge_calls",
                                         "Judge calls made for the audit, off the request path",
                                         registry=r)
        self.latency = Histogram("speculabel_request_latency_seconds",
                                 "Wall time of POST /v1/classify, from body read to answer",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_items = Histogram("speculabel_batch_items",
                                     "Items per micro-batch handed to the cascade",
                                     buckets=BATCH_BUCKETS, registry=r)
        self.ready = Gauge("speculabel_ready", "1 once every model is loaded", registry=r)
        self.audit_state = Gauge("speculabel_audit_state", "1 for the audit's current state",
                                 ["state"], registry=r)
        self.audit_values = Gauge("speculabel_audit", "The running check of the certificate: "
                                  "observations n and agreements k of the current sequence, its "
                                  "estimate k/n, anytime-valid lower and upper bounds, the target, "
                                  "1 while every item goes to the judge, audits waiting",
                                  ["value"], registry=r)
        self.audit: dict[str, Any] | None = None
        self.audit_queue = 0

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        a = (self.audit or {}).get("audit")
        state = a["state"] if a else "off"
        for s in STATES:
            self.audit_state.labels(state=s).set(1.0 if s == state else 0.0)
        if a:
            values = {"n": a["n"], "k": a["k"], "estimate": a["estimate"], "lower": a["lower"],
                      "upper": a["upper"], "target": a["target"], "alpha": a["alpha"],
                      "rate": a["rate"], "force_judge": float(a["force_judge"]),
                      "audited_total": a["audited_total"], "agreed_total": a["agreed_total"],
                      "queue": self.audit_queue}
            for name, v in values.items():
                self.audit_values.labels(value=name).set(float("nan") if v is None else float(v))
        return bytes(generate_latest(self.registry))
