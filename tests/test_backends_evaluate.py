"""The evaluators on the tiny model: real lm-eval over local tasks (tests/data/tasks)
and the corpus perplexity evaluator against a straightforward reference."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("lm_eval")

from pytest_quant.backends import get_evaluator  # noqa: E402
from pytest_quant.backends.evaluate.lmeval_hf import result_from_lm_eval  # noqa: E402
from pytest_quant.backends.evaluate.perplexity import windows  # noqa: E402
from pytest_quant.backends.models import build_tiny_llama, load_causal_lm  # noqa: E402
from pytest_quant.config import EvaluationConfig, TaskConfig  # noqa: E402
from pytest_quant.errors import QuantConfigError  # noqa: E402
from pytest_quant.results import TaskResult, aggregate  # noqa: E402

DATA = Path(__file__).parent / "data"
TASKS = str(DATA / "tasks")
CORPUS = DATA / "corpus.txt"
EVAL = EvaluationConfig()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny1") / "tiny-llama-seed1", seed=1)


def lm_task(task: str, **kw) -> TaskConfig:
    return TaskConfig(name=f"my_{task}", task=task, include_path=TASKS, **kw)


def evaluate(model: Path, task: TaskConfig, seed: int = 0) -> tuple[TaskResult, dict]:
    return get_evaluator("hf").evaluate_with_samples(model, task, EVAL, seed=seed)


# --------------------------------------------------------------------------- lm-eval
def test_accuracy_value_is_lm_evals_aggregate_and_the_per_item_mean(tiny_model: Path) -> None:
    result, raw = evaluate(tiny_model, lm_task("pq_arith"))
    assert result.task == "my_pq_arith" and result.metric == "acc_norm"  # default: acc_norm when present
    assert result.value == raw["results"]["pq_arith"]["acc_norm,none"]
    assert result.n == 60 and result.value == pytest.approx(sum(result.scores) / 60, abs=1e-12)
    assert result.item_ids == tuple(str(i) for i in range(60))
    assert set(result.scores) <= {0.0, 1.0} and result.weights is None
    assert result.aggregation == "mean" and result.higher_is_better is True
    per_item = {str(s["doc_id"]): s["acc_norm"] for s in raw["samples"]["pq_arith"]}
    assert dict(zip(result.item_ids, result.scores, strict=True)) == per_item
    assert result.stderr == pytest.approx(math.sqrt(result.value * (1 - result.value) / 59), rel=1e-9)
    assert result.meta["lm_eval_version"] and result.meta["n_shot"] == 0 and result.meta["task_version"] == 1.0

    acc = result_from_lm_eval(raw, lm_task("pq_arith", metric="acc"))  # same run, other metric
    assert acc.metric == "acc" and acc.value == raw["results"]["pq_arith"]["acc,none"]
    assert acc.fingerprint == result.fingerprint  # same items and prompts


def test_loglikelihood_perplexity_metric(tiny_model: Path) -> None:
    result, raw = evaluate(tiny_model, lm_task("pq_last_word", metric="perplexity"))
    assert result.aggregation == "perplexity" and result.higher_is_better is False and result.weights is None
    lls = [s["perplexity"] for s in sorted(raw["samples"]["pq_last_word"], key=lambda s: s["doc_id"])]
    assert list(result.scores) == [-ll for ll in lls]  # scores are NLLs
    assert result.value == pytest.approx(math.exp(-sum(lls) / len(lls)), rel=1e-9)
    assert result.value == raw["results"]["pq_last_word"]["perplexity,none"]
    default = result_from_lm_eval(raw, lm_task("pq_last_word"))
    assert default.metric == "acc" and default.aggregation == "mean"  # no acc_norm: acc


def test_rolling_loglikelihood_metrics_carry_counts_as_weights(tiny_model: Path) -> None:
    first, raw = evaluate(tiny_model, lm_task("pq_corpus"))
    assert first.metric == "word_perplexity"  # no acc: the first metric
    paragraphs = [p.strip() for p in CORPUS.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        result = result_from_lm_eval(raw, lm_task("pq_corpus", metric=metric))
        counts = [len(re.split(r"\s+", p)) if metric == "word_perplexity" else len(p.encode()) for p in paragraphs]
        assert result.weights == tuple(float(c) for c in counts)
        assert result.value == raw["results"]["pq_corpus"][f"{metric},none"]
        assert result.value == pytest.approx(aggregate("perplexity", metric, result.scores, result.weights), rel=1e-9)
        assert result.aggregation == "perplexity" and result.higher_is_better is False
        assert result.scores == first.scores  # -loglikelihood per paragraph


def test_generation_task_exact_match(tiny_model: Path) -> None:
    result, raw = evaluate(tiny_model, lm_task("pq_echo"))
    assert result.metric == "exact_match" and result.n == 12
    assert result.value == raw["results"]["pq_echo"]["exact_match,none"]


def test_group_task_pools_its_subtasks_items(tiny_model: Path) -> None:
    result, raw = evaluate(tiny_model, lm_task("pq_group", metric="acc"))
    assert result.n == 60 + len(raw["samples"]["pq_last_word"])
    assert result.item_ids[0] == "pq_arith/0" and result.item_ids[-1].startswith("pq_last_word/")
    assert result.value == pytest.approx(sum(result.scores) / result.n, abs=1e-12)
    assert result.meta["subtasks"] == ["pq_arith", "pq_last_word"]


def test_fingerprint_identifies_items_not_the_model(tiny_model: Path, other_model: Path) -> None:
    a, _ = evaluate(tiny_model, lm_task("pq_arith", limit=20))
    b, _ = evaluate(other_model, lm_task("pq_arith", limit=20))
    assert a.fingerprint == b.fingerprint and a.item_ids == b.item_ids
    assert a.scores != b.scores  # different weights, different answers
    c, _ = evaluate(tiny_model, lm_task("pq_arith", limit=10))
    d, _ = evaluate(tiny_model, lm_task("pq_arith", limit=20, num_fewshot=2))
    assert len({a.fingerprint, c.fingerprint, d.fingerprint}) == 3
    assert d.meta["n_shot"] == 2 and d.meta["limit"] == 20


def test_same_seed_same_scores_and_the_model_is_loaded_once(tiny_model: Path) -> None:
    model, _ = load_causal_lm(tiny_model)
    first, _ = evaluate(tiny_model, lm_task("pq_arith", limit=20, num_fewshot=3), seed=7)
    second, _ = evaluate(tiny_model, lm_task("pq_arith", limit=20, num_fewshot=3), seed=7)
    assert first == second
    assert load_causal_lm(tiny_model)[0] is model  # kept between tasks


def test_unknown_metric_lists_the_known_ones(tiny_model: Path) -> None:
    with pytest.raises(QuantConfigError, match="has no metric 'f1'; it has acc, acc_norm"):
        evaluate(tiny_model, lm_task("pq_arith", metric="f1", limit=5))


@pytest.mark.slow
def test_unknown_task_is_a_config_error_naming_it(tiny_model: Path) -> None:
    # lm-eval's own index is searched too (about 15k task files): slow
    with pytest.raises(QuantConfigError, match="lm-eval does not know task 'pq_no_such_task'") as info:
        evaluate(tiny_model, lm_task("pq_no_such_task"))
    assert info.value.field == "tasks.my_pq_no_such_task"


def test_include_path_must_exist(tiny_model: Path, tmp_path: Path) -> None:
    task = TaskConfig(name="t", task="pq_arith", include_path=str(tmp_path / "nowhere"))
    with pytest.raises(QuantConfigError, match="include_path .* is not a folder"):
        get_evaluator("hf").evaluate(tiny_model, task, EVAL)


# --------------------------------------------------------------------------- perplexity
def ppl_task(**kw) -> TaskConfig:
    return TaskConfig(name="ppl", perplexity=str(CORPUS), **kw)


def reference_window_nll(model_dir: Path, seq_len: int) -> tuple[list[float], list[int]]:
    """One window at a time, the textbook way: HF's mean loss over the window's labels."""
    model, tok = load_causal_lm(model_dir)
    ids = tok(CORPUS.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    body = seq_len - 1  # the tiny tokenizer adds BOS: BOS + seq_len - 1 corpus tokens per window
    nlls, counts = [], []
    with torch.inference_mode():
        for start in range(0, len(ids), body):
            window = torch.tensor([[tok.bos_token_id, *ids[start : start + body]]])
            loss = model(input_ids=window, labels=window).loss  # mean over window.shape[1] - 1 tokens
            n = window.shape[1] - 1
            nlls.append(float(loss) * n)
            counts.append(n)
    return nlls, counts


def test_perplexity_matches_a_straightforward_reference(tiny_model: Path) -> None:
    result = get_evaluator("perplexity").evaluate(tiny_model, ppl_task(seq_len=256), EVAL)
    nlls, counts = reference_window_nll(tiny_model, 256)
    assert result.n == len(nlls) == math.ceil(len(CORPUS.read_bytes()) / 255)
    assert result.weights == tuple(float(c) for c in counts)
    assert result.scores == pytest.approx(nlls, rel=1e-5)
    assert result.value == pytest.approx(math.exp(sum(nlls) / sum(counts)), rel=1e-5)
    assert result.metric == "perplexity" and result.aggregation == "perplexity" and not result.higher_is_better


def test_perplexity_is_deterministic_and_batch_size_invariant(tiny_model: Path) -> None:
    evaluator = get_evaluator("perplexity")
    a = evaluator.evaluate(tiny_model, ppl_task(seq_len=128), EVAL)
    assert evaluator.evaluate(tiny_model, ppl_task(seq_len=128), EVAL) == a
    one = evaluator.evaluate(tiny_model, ppl_task(seq_len=128, batch_size=1), EVAL)
    assert one.scores == pytest.approx(a.scores, rel=1e-5)


def test_bits_per_byte_weights_tile_the_corpus(tiny_model: Path) -> None:
    evaluator = get_evaluator("perplexity")
    bpb = evaluator.evaluate(tiny_model, ppl_task(seq_len=128, metric="bits_per_byte"), EVAL)
    assert sum(bpb.weights) == len(CORPUS.read_bytes())
    ppl = evaluator.evaluate(tiny_model, ppl_task(seq_len=128), EVAL)
    assert bpb.scores == ppl.scores
    assert bpb.value == pytest.approx(sum(ppl.scores) / sum(bpb.weights) / math.log(2))
    words = evaluator.evaluate(tiny_model, ppl_task(seq_len=128, metric="word_perplexity"), EVAL)
    assert sum(words.weights) >= len(CORPUS.read_text().split())  # words cut by a window count twice


def test_perplexity_max_tokens_and_fingerprint(tiny_model: Path, other_model: Path) -> None:
    evaluator = get_evaluator("perplexity")
    capped = evaluator.evaluate(tiny_model, ppl_task(seq_len=64, max_tokens=300), EVAL)
    assert sum(capped.weights) == 300 and capped.n == 5  # 63 + 63 + 63 + 63 + 48 tokens
    full = evaluator.evaluate(tiny_model, ppl_task(seq_len=64), EVAL)
    other = evaluator.evaluate(other_model, ppl_task(seq_len=64), EVAL)
    assert full.fingerprint == other.fingerprint != capped.fingerprint
    assert evaluator.evaluate(tiny_model, ppl_task(seq_len=128), EVAL).fingerprint != full.fingerprint


def test_windows_without_bos_predict_all_but_the_first_token() -> None:
    from pytest_quant.backends.models import byte_level_tokenizer

    tok = byte_level_tokenizer()
    tok.bos_token = None
    items = windows(tok, "abcdefghij", seq_len=4)
    assert [w.input_ids for w in items] == [[3 + ord(c) for c in s] for s in ("abcd", "efgh", "ij")]
    assert [w.n_predicted for w in items] == [3, 3, 1]


def test_missing_corpus_is_a_config_error(tiny_model: Path, tmp_path: Path) -> None:
    task = TaskConfig(name="ppl", perplexity=str(tmp_path / "missing.txt"))
    with pytest.raises(QuantConfigError, match="corpus .*missing.txt.* does not exist"):
        get_evaluator("perplexity").evaluate(tiny_model, task, EVAL)


def test_suite_tasks_reading_metrics_of_one_lm_eval_run_share_it(tiny_model: Path, tmp_path: Path) -> None:
    # LAMBADA's accuracy and perplexity in the demo suite are two suite tasks over one lm-eval run.
    from pytest_quant.backends.cache import ArtifactCache
    from pytest_quant.config import ModelConfig
    from pytest_quant import evaluation
    from pytest_quant.session import Options, QuantSession

    session = QuantSession(Options(baseline_dir=tmp_path / "baselines", cache_dir=tmp_path / "cache"))
    model = ModelConfig(name="tiny", path=str(tiny_model))
    acc = evaluation.evaluate(session, model, None, TaskConfig(name="pq_arith", include_path=TASKS, metric="acc", limit=12), EVAL)
    norm = evaluation.evaluate(session, 
        model, None, TaskConfig(name="arith_norm", task="pq_arith", include_path=TASKS, metric="acc_norm", limit=12), EVAL
    )

    def runs() -> list[dict]:
        return [b for b in ArtifactCache(tmp_path / "cache").builds() if b["kind"] == "run"]

    assert len(runs()) == 1 and runs()[0]["label"] == "tiny/baseline/pq_arith"
    assert (acc.metric, norm.metric) == ("acc", "acc_norm") and acc.item_ids == norm.item_ids
    direct, raw = evaluate(tiny_model, lm_task("pq_arith", metric="acc", limit=12))
    assert acc.scores == direct.scores and acc.value == raw["results"]["pq_arith"]["acc,none"]
    assert norm.value == raw["results"]["pq_arith"]["acc_norm,none"]
    evaluation.evaluate(session, model, None, TaskConfig(name="pq_arith", include_path=TASKS, metric="acc", limit=6), EVAL)
    assert len(runs()) == 2  # another limit is another run
