"""lmms-eval glue of the M3-Bench tasks: the `!function` hooks (`hooks`) and the entry point (`plugin`)."""
