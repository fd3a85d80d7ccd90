"""To and from other tools: Hugging Face names and dirs, GGUF, PEFT adapters, chat templates, model cards."""
