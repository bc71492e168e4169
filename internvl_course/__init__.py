"""internvl-course: learn how InternVL2 works, then fine-tune it with XTuner and serve it with LMDeploy.

The package is imported by every notebook (the course env) and by the training subprocesses
(the train env), so importing it stays cheap: submodules are imported where they are used.
"""

__version__ = "0.1.0"
