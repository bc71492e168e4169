"""Serving: one chat API over LMDeploy (GPU) and transformers (anywhere), and the web demo.

- ``chat``: ``pipeline(model_path)`` and multi-turn sessions with the same greedy replies on
  every backend;
- ``demo``: ``build_demo()``, the gradio chat of lesson 04.
"""
