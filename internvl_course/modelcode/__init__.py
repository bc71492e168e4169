"""The kit's own InternVL2 code: the "remote code" files every model directory carries.

``configuration_internvl_chat.MODEL_CODE_FILES`` lists the configuration, modeling and
conversation files that are copied into each model directory the kit writes, as
OpenGVLab/InternVL2-2B carries its own, so that ``AutoModel.from_pretrained(dir,
trust_remote_code=True)`` loads them; the tokenization files travel with the tokenizer.
``official_configs.py`` is not copied: it holds InternVL2-2B's published configuration values.
These files import one another only relatively and import nothing from ``internvl_course``, which
is why this package file stays empty: the same files must work here and inside a model directory.
"""
