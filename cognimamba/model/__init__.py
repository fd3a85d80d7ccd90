"""The model: the transformer and its caches, linear layers, the tokenizer."""
