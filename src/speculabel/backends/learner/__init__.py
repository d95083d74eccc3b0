"""Workers that learn from labels: MiniLM embeddings with a small fitted head."""
