"""Reading the released M3-Bench layout: validated, normalized records (`m3bench`)."""
