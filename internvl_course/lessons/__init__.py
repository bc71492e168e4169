"""What the lessons show, so that each notebook stays a sentence, a call and a figure.

- ``patterns``: lesson 01's five design patterns and three fusion styles, in small torch models;
- ``pattern_figures``: lesson 01's figures of those patterns;
- ``architecture``: lesson 02's shape trace, parameter counts and model family;
- ``tiling_figures``: lesson 03's demo pictures, tile grids, token budget and pixel shuffle;
- ``charts``: the charts several lessons and fine-tuning draw (learning curves, parameter bars).
"""
