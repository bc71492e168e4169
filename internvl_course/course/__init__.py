"""The course machinery: which notebooks, how they run headless, and whether a machine is ready.

- ``plan``: the notebooks in order; ``notebook``: helpers for code inside a notebook
  (parameters, interactive or not); ``publish``: the figures a notebook publishes for tests;
- ``runner``: ``internvl-course run`` (``make course``); ``outputs``: the committed outputs;
- ``doctor``: ``internvl-course doctor``; ``wheelhouse``: offline wheel bundles.
"""
