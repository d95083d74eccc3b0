"""In-process GGUF models (llama.cpp): prompts, the KV-cache engine, and the backend."""
