"""RADAR for lmms-eval: M3-Bench tasks, the Soft Discrimination Score and the `radar_hf` likelihood wrapper.

Importing this package is cheap; lmms-eval, torch and transformers are imported only by the modules that need them.
"""

__version__ = "0.1.0"
