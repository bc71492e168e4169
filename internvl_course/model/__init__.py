"""Models: recognise an InternVL2 / InternVL2.5 folder and load it with the kit's own code.

- ``folder``: ``inspect_folder(path)`` checks a folder (family, template, files, whole weights)
  and refuses what the kit cannot run, naming the file or field and the fix;
- ``load``: ``load_model(path)`` -> (model, tokenizer) from the kit's ``modelcode`` classes, the
  one loading path of chat, demo, evaluation, conversion and the lessons;
- ``prepare``: ``prepared_folder(path, tool)`` hands LMDeploy and XTuner, which read folders
  themselves, a folder that runs the kit's code beside the checkpoint's linked weights;
- ``prompt``: the conversation text InternVL2 reads (template turns, ``<image>`` expanded), built
  the way the model's own ``chat()`` builds it;
- ``write``: ``write_model_folder``, the one writer of model folders (tiny, full-size, converted);
- ``preprocess``: from a picture to InternVL2's input: dynamic tiling, the tile transform.
"""
