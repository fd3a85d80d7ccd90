"""Decoding: sampling, text streaming, and the engine that chat, serve and bench share."""
