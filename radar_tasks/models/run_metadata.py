"""What the results JSON records of a radar_hf run (`radar_tasks.model`): its settings and how its questions were
scored, summed over the ranks of a data-parallel run. No lmms-eval here.
"""

from __future__ import annotations

from radar_tasks.models.loading import LoadedModel


def summed(outcomes: list[dict]) -> dict:
    """The prefix-sharing outcomes of the ranks (`SharedPrefixScorer.outcome()` + `not_scored`) as one: counts
    added, the first run fallback reason kept."""
    total = {"shared": 0, "per_candidate": 0, "not_scored": 0, "run_fallback": None, "question_fallbacks": {}}
    for part in outcomes:
        for key in ("shared", "per_candidate", "not_scored"):
            total[key] += part[key]
        total["run_fallback"] = total["run_fallback"] or part["run_fallback"]
        for reason, n in part["question_fallbacks"].items():
            total["question_fallbacks"][reason] = total["question_fallbacks"].get(reason, 0) + n
    return total


def gathered(outcome: dict, world_size: int) -> dict:
    """`outcome` summed over the ranks: a collective when `world_size` > 1 (every rank calls it once per run)."""
    if world_size == 1:
        return outcome
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # the process group itself: accelerate's state may count one process where another library started the
        # group (the transformers Trainer under DeepSpeed on CPU), and its gather would then fail
        outcomes = [None] * dist.get_world_size()
        dist.all_gather_object(outcomes, outcome)
        return summed(outcomes)
    from accelerate.utils import gather_object

    return summed(gather_object([outcome]))


def results_entry(loaded: LoadedModel, *, world_size: int, sharing: dict) -> dict:
    """The results JSON's `radar_tasks.model` entry; `sharing`: the outcome with `not_scored` (`gathered`)."""
    settings, sharing = loaded.settings, dict(sharing)
    return {
        "pretrained": settings.pretrained,
        "model_type": loaded.model_type,
        "prompt_style": settings.prompt_style,
        "score": settings.score,
        "protocol": settings.protocol,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "device": str(loaded.device),
        "batch_size": settings.batch_size,
        "world_size": world_size,
        "share_prefix": settings.share_prefix,
        "images": settings.images,
        "not_scored": sharing.pop("not_scored"),
        "prefix_sharing": sharing,
    }
