"""SDS in lm-eval 0.4 multiple-choice tasks (radar_tasks.metrics.lm_eval).

Unit tests of the per-doc scoring, then one end-to-end run: lm-eval's `simple_evaluate` with its `hf` model on a
tiny random-weight GPT-2 (built offline here) and the task in tests/data/lm_eval_task; every logged per-sample SDS
must equal a hand computation in plain torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from radar_tasks.metrics import lm_eval

TASK_DIR = Path(__file__).parent / "data" / "lm_eval_task"
TASK = "radar_sds_tiny"
PROMPT = "Question: {question}\nAnswer:"  # the task's doc_to_text
DELIMITER = " "  # lm-eval's default target_delimiter


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


# ------------------------------------------------------------------------------------------------------------------
# Per-doc scoring
# ------------------------------------------------------------------------------------------------------------------


def test_process_results_reads_gold_from_doc():
    lls = [-4.0, -2.5, -3.0]
    results = [(ll, False) for ll in lls]
    for gold in range(3):
        out = lm_eval.process_results({"choices": ["a", "b", "c"], "gold": gold}, results)
        assert out["sds"] == pytest.approx(_softmax(lls)[gold], abs=1e-12)
        assert out["acc"] == (1.0 if gold == 1 else 0.0)
        assert all(type(v) is float for v in out.values())


def test_process_results_first_and_factory():
    lls = [-1.0, -2.0]
    results = [(ll, True) for ll in lls]
    assert lm_eval.process_results_first({}, results)["sds"] == pytest.approx(_softmax(lls)[0])
    by_label = lm_eval.make_process_results(gold_field="label")
    assert by_label({"label": 1}, results)["sds"] == pytest.approx(_softmax(lls)[1])
    assert by_label({"label": "1"}, results)["sds"] == pytest.approx(_softmax(lls)[1])
    by_key = lm_eval.make_process_results(gold_field="answerKey", choices_field=None)
    assert by_key({"answerKey": "B"}, results)["acc"] == 0.0
    by_text = lm_eval.make_process_results(gold_field="answer")
    assert by_text({"answer": "yes", "choices": ["no", "yes"]}, results)["sds"] == pytest.approx(_softmax(lls)[1])
    # stringified results (as some wrappers hand them) parse too
    assert lm_eval.process_results({"gold": 0}, ["(-1.0, True)", "(-2.0, False)"])["sds"] == pytest.approx(
        _softmax(lls)[0]
    )


def test_process_results_rejects_bad_gold():
    results = [(-1.0, False), (-2.0, False)]
    with pytest.raises(ValueError, match="no gold field"):
        lm_eval.process_results({"label": 0}, results)
    with pytest.raises(ValueError, match="out of range"):
        lm_eval.process_results({"gold": 2}, results)
    with pytest.raises(ValueError, match="cannot read"):
        lm_eval.process_results({"gold": True}, results)
    with pytest.raises(ValueError, match="3 choices"):
        lm_eval.process_results({"gold": 0, "choices": ["a", "b", "c"]}, results)


def test_non_finite_loglik_is_wrong_and_left_out_of_sds():
    assert lm_eval.process_results({"gold": 0}, [(float("-inf"), False), (-2.0, False)]) == {"acc": 0.0}


def test_aggregation_is_lm_evals_mean_so_stderr_is_reported():
    from lm_eval.api.metrics import mean, mean_stderr, stderr_for_metric

    assert lm_eval.sds_mean is mean
    assert stderr_for_metric(lm_eval.sds_mean, bootstrap_iters=100) is mean_stderr
    assert lm_eval.sds_mean([0.25, 0.75]) == 0.5


# ------------------------------------------------------------------------------------------------------------------
# End to end: lm-eval `hf` model + tiny task
# ------------------------------------------------------------------------------------------------------------------

_CORPUS = [
    "Question: Which animal is this? Answer: a dog, a cat or a bird.",
    "Question: What is the value of x in 2x + 3 = 11? Answer: 4.",
    "The plant in the picture is a sunflower, a rose or an oak tree.",
    "People are walking in a park near the river at sunset.",
    "The velocity of the ball is 3 m/s, not 11 m/s.",
]


def _build_tiny_gpt2(folder: Path) -> Path:
    """A random-weight GPT-2 (hidden 32, 2 layers) with a byte-level BPE tokenizer trained on `_CORPUS`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    config = GPT2Config(
        vocab_size=len(fast),
        n_positions=256,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=fast.eos_token_id,
        eos_token_id=fast.eos_token_id,
        initializer_range=0.3,  # large random weights: choices get clearly different probabilities
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def _hand_logliks(model, tokenizer, context: str, choices: list[str]) -> list[float]:
    """Summed log P(target_delimiter + choice | context), context and continuation tokenized apart."""
    import torch

    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    out = []
    for choice in choices:
        cont = tokenizer(DELIMITER + choice, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([ctx + cont])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
        # token t is predicted at position t-1
        out.append(sum(logprobs[len(ctx) + i - 1, t].item() for i, t in enumerate(cont)))
    return out


@pytest.fixture(scope="module")
def lm_eval_run(tmp_path_factory):
    """Runs `simple_evaluate` once (offline, datasets cache in a tmp folder); returns (results, model folder)."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("lm_eval")
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        mp.setenv(var, "1")
    mp.setenv("HF_DATASETS_CACHE", str(tmp / "datasets_cache"))
    mp.setenv("TOKENIZERS_PARALLELISM", "false")
    mp.chdir(TASK_DIR)  # the task's data_files path is relative
    try:
        model_dir = _build_tiny_gpt2(tmp / "tiny_gpt2")
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager

        results = simple_evaluate(
            model="hf",
            model_args=f"pretrained={model_dir},device=cpu,dtype=float32",
            tasks=[TASK],
            task_manager=TaskManager(include_path=str(TASK_DIR), include_defaults=False),  # skip indexing ~10k YAMLs
            batch_size=1,
            log_samples=True,
            bootstrap_iters=1000,  # > 0, else no stderr at all (mean_stderr is closed-form)
        )
    finally:
        mp.undo()
    return results, model_dir


@pytest.mark.slow  # lm-eval end to end, ~10 s
def test_lm_eval_end_to_end_sds_matches_hand_computation(lm_eval_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    results, model_dir = lm_eval_run
    docs = [json.loads(line) for line in (TASK_DIR / "items.jsonl").read_text().splitlines() if line.strip()]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    samples = results["samples"][TASK]
    assert len(samples) == len(docs)
    by_id = {s["doc"]["id"]: s for s in samples}
    sds_values, acc_values = [], []
    for doc in docs:
        sample = by_id[doc["id"]]
        context = PROMPT.format(question=doc["question"])
        # the requests lm-eval made are (context, delimiter + choice)
        assert [tuple(a) for a in sample["arguments"]] == [(context, DELIMITER + c) for c in doc["choices"]]
        lls = _hand_logliks(model, tokenizer, context, doc["choices"])
        lm_lls = [r[0] for r in sample["filtered_resps"]]
        assert lm_lls == pytest.approx(lls, abs=1e-4), doc["id"]
        p = _softmax(lls)
        # the test can tell the gold choice from the others (a wrong gold index would fail it)
        assert max(abs(p[doc["gold"]] - q) for j, q in enumerate(p) if j != doc["gold"]) > 1e-3
        assert sample["sds"] == pytest.approx(p[doc["gold"]], abs=1e-5), doc["id"]
        expected_acc = 1.0 if lls[doc["gold"]] >= max(lls) else 0.0
        assert sample["acc"] == expected_acc
        sds_values.append(sample["sds"])
        acc_values.append(sample["acc"])

    # the set is not degenerate: SDS spans a range, not all 0/1 or all 1/K
    assert max(sds_values) - min(sds_values) > 0.05

    agg = results["results"][TASK]
    n = len(sds_values)
    mean = sum(sds_values) / n
    assert agg["sds,none"] == pytest.approx(mean, abs=1e-9)
    assert agg["acc,none"] == pytest.approx(sum(acc_values) / n, abs=1e-9)
    std = math.sqrt(sum((v - mean) ** 2 for v in sds_values) / (n - 1))
    assert agg["sds_stderr,none"] == pytest.approx(std / math.sqrt(n), abs=1e-9)
    assert results["higher_is_better"][TASK] == {"sds": True, "acc": True}
