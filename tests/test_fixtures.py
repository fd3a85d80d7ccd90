import cognimamba


def test_tiny_run_loads(tiny_run):
    loaded = cognimamba.load(tiny_run)
    assert loaded.config.model.dim == 64
    assert loaded.tokenizer.get_vocab_size() == loaded.config.model.vocab_size
