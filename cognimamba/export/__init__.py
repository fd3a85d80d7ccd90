"""Writing a run dir in other tools' formats: a Hugging Face model dir, a PEFT adapter, a GGUF file.

`hf_convert` (one level up) holds the tensor name mapping both directions share; these modules write files.
"""
