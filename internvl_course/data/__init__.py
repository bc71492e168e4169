"""Data: the kit's own food VQA dataset, FoodieQA from your copy, and checks before use.

- ``words``: the kit's bilingual vocabulary (food, tableware, colours, shapes, course lines);
- ``drawing``: procedural pictures of things on a table, the kit's one image generator;
- ``dishes``: how each of the 24 dishes looks, drawn with ``drawing``;
- ``food_vqa``: the dataset itself (``internvl-course data build|check``);
- ``foodieqa``: FoodieQA's single-image questions from your own copy (evaluation only);
- ``validate``: a VQA file checked before anything trains on it or is scored on it.
"""
