"""The embedded stand-in: tiny InternVL2 models that walk the same road as real checkpoints.

- ``build``: ``build_tiny_model(dst, family=...)`` in the official layout and config schema, and
  ``lay_out_as_download`` (a folder shaped like a Hugging Face download, for tests);
- ``internlm2_tokenizer`` / ``qwen2_tokenizer``: the stand-ins' tokenizers, trained on the kit's text;
- ``table_talk``: the generated pictures and conversations the base is taught on;
- ``pretrain``: the miniature two-stage recipe that taught the shipped base (``data/tiny_base``) to talk;
- ``fullsize``: full-size InternVL2-2B/1B-shaped models with random weights, for GPU checks.
"""
