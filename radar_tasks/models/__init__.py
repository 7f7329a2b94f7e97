"""Model-side code: `likelihood` (the scoring core, no lmms-eval) and `radar_hf` (the lmms-eval wrapper).

Nothing is imported here on purpose: importing `radar_hf` pulls lmms-eval, torch and accelerate.
"""
