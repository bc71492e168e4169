"""What the lessons show, so that each notebook stays a sentence, a call and a figure.

- ``patterns``: lesson 01's five design patterns and three fusion styles, in small torch models;
- ``viz``: every figure and table the lessons draw.
"""
