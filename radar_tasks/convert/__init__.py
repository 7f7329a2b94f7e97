"""Converters for checkpoints that no PyPI package loads, into folders that transformers' Auto classes load.

* `llava_ov_projector.convert_llava_ov_projector`: a LLaVA-OneVision (LLaVA-NeXT code base) stage-1 projector checkpoint
  (`mm_projector.bin` + its `config.json`) + the base LLM folder + the SigLIP tower folder -> a transformers
  `LlavaForConditionalGeneration` checkpoint with a `LlavaProcessor` (729 tokens per 384 px image, no anyres).
* `internvl.convert_internvl`: an InternVL (2.5 / 3 / 3.5, `-Pretrained` included) remote-code checkpoint
  (`InternVLChatModel`) -> a transformers `InternVLForConditionalGeneration` checkpoint with an `InternVLProcessor`
  (448 px dynamic tiling, 1..3 tiles + thumbnail, 256 tokens per tile).

Both write a folder that `AutoModelForImageTextToText.from_pretrained` / `AutoProcessor.from_pretrained` load with no
remote code. `radar-tasks convert-llava-ov-projector` / `radar-tasks convert-internvl` (see `cli.add_parsers`).
"""
