"""Seeded procedural corpora: stories for pretraining, conversations for chat fine-tuning (see `registry`)."""
