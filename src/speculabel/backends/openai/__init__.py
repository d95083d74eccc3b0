"""Models behind OpenAI-compatible servers: transport, request bodies, answer parsing."""
