"""``speculabel serve``: the cascade as an online service that keeps checking its certificate.

``app`` (the HTTP surface, Starlette on uvicorn), ``batcher`` (concurrent requests gathered into
the cascade's batches, one model thread), ``log`` (the append-only log of answered items),
``audit`` (the anytime-valid running check of the certificate), ``metrics`` (Prometheus text),
``bench`` (the load benchmark).  Nothing is imported here: the web stack loads only when a
server is made.
"""
