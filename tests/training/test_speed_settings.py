"""The CPU speed settings (each can be switched on alone): threads, bf16 autocast, a training
length fitted to the data, tokenization once, a cheaper dev evaluation during training; and the
model's prompts in training."""

from __future__ import annotations

import json

import pytest
import torch

from bertino_rag.training import TrainConfig, train
from bertino_rag.training.hardware import cpu_bf16_supported
from bertino_rag.training.tokens import TokenCache, fit_seq_length, training_prompts

PROMPTS = {"query": "domanda: ", "document": "testo: "}


@pytest.fixture(scope="module")
def tiny_with_prompts(tiny_bert, tmp_path_factory) -> str:
    """The tiny BERT as a sentence-transformers folder with query/document prompts."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_bert, device="cpu", prompts=PROMPTS)
    folder = tmp_path_factory.mktemp("tiny-prompts")
    model.save(str(folder))
    return str(folder)


def test_token_cache_pads_like_the_tokenizer(tiny_bert):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_bert, device="cpu")
    prepare = getattr(model, "preprocess", None) or model.tokenize
    cache = TokenCache(prepare, model.tokenizer.pad_token_id)
    texts = ["Il Colosseo è a Roma.", "La pizza margherita nasce a Napoli nel 1889.", "Ciao."]
    later = [*reversed(texts), "Un testo nuovo, mai visto prima d'ora."]
    for kwargs in ({}, {"prompt": "domanda: "}):
        first = cache(texts, **kwargs)
        again = cache(later, **kwargs)
        plain = prepare(later, **kwargs)
        assert set(first) == set(again) == set(plain)
        for key, value in plain.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(again[key], value), key
            else:  # e.g. sentence-transformers 5.7's modality and prompt_length
                assert again[key] == value, key
    assert (cache.misses, cache.hits) == (8, 6)


def test_fitted_length_holds_the_share_asked():
    class Counting:  # one token per word, plus the two specials
        def __call__(self, texts, **kwargs):
            return {"input_ids": [[0] * (len(t.split()) + 2) for t in texts]}

    long = [" ".join(["x"] * n) for n in range(1, 101)]  # 3 .. 102 tokens
    short = ["x y"] * 1000  # many short texts (STS sentences) do not decide for the long ones
    length, stats = fit_seq_length(Counting(), {"documents": long, "sts": short}, 1.0, cap=512)
    assert length == 104 and stats["cut"] == 0 and stats["documents"]["max"] == 102
    length, stats = fit_seq_length(Counting(), {"documents": long, "sts": short}, 0.5, cap=512)
    assert length == 56 and stats["cut"] == 46  # documents of 57..102 tokens are cut
    assert stats["sts"] == {"texts": 1000, "p50": 4, "p99": 4, "max": 4, "cut": 0}
    assert fit_seq_length(Counting(), {"documents": long}, 1.0, cap=64)[0] == 64
    with pytest.raises(ValueError, match="seq_length_quantile"):
        fit_seq_length(Counting(), {"documents": long}, 0.0, cap=64)


def test_prompts_follow_the_model():
    class Model:
        prompts = {"query": "query: ", "document": "passage: "}

    out = training_prompts(Model(), ["anchor", "positive", "negative_1"], sts=True)
    assert out == {"retrieval": {"anchor": "query: ", "positive": "passage: ",
                                 "negative_1": "passage: "},
                   "sts": {"sentence1": "passage: ", "sentence2": "passage: "}}

    class Plain:
        prompts: dict = {}

    assert training_prompts(Plain(), ["anchor", "positive"], sts=False) is None


def test_every_setting_on_a_tiny_run(tiny_with_prompts, small_beir, small_sts, tmp_path):
    precision = "bf16" if cpu_bf16_supported() else "fp32"
    before = torch.get_num_threads()
    try:
        out = train(TrainConfig(
            base_model=tiny_with_prompts, train_data=str(small_beir), sts_data=str(small_sts),
            output_dir=str(tmp_path / "run"), dev_fraction=0.25, matryoshka_dims=[32, 16],
            matryoshka_weights=[1.0, 0.5], best_dim=16, batch_size=8, mini_batch_size=4,
            learning_rate=1e-3, warmup_ratio=0.0, max_steps=4, eval_steps=2, logging_steps=1,
            num_negatives=1, neg_relative_margin=None, multi_dataset_sampler="round_robin",
            device="cpu", rescore_k=None, precision=precision, threads=1, pretokenize=True,
            seq_length_quantile=0.9, eval_max_queries=10, attention_dropout=0.0))
    finally:
        torch.set_num_threads(before)
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    t = m["training"]
    assert t["precision"] == precision and t["threads"] == 1 and t["steps"] == 4
    stats = t["length_stats"]
    assert t["train_length"] % 8 == 0 and t["train_length"] <= 128  # the model's own limit
    assert set(stats) == {"queries", "documents", "sts", "cut"}
    for group in ("queries", "documents", "sts"):
        g = stats[group]
        assert g["p50"] <= g["p99"] <= g["max"]
        if t["train_length"] < 128:
            assert g["cut"] <= 0.1 * g["texts"] + 1
    assert t["prompts"]["retrieval"] == {"anchor": "domanda: ", "positive": "testo: ",
                                         "negative_1": "testo: "}
    assert t["pretokenized"]["texts"] > 0 and t["eval_queries_during_training"] == 10
    assert m["data"]["dev_queries"] > 10  # the evaluations before and after use every query
    # the saved model keeps its full length and its prompts
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(out), device="cpu").max_seq_length == 128
    config = json.loads((out / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    assert config["prompts"]["query"] == "domanda: "
    # trained without attention dropout, saved with the base's own
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))[
        "attention_probs_dropout_prob"] == pytest.approx(0.1)


def test_attention_dropout_is_off_while_training_and_the_base_keeps_its_own(
        tiny_with_prompts, small_beir):
    from bertino_rag.training.train import prepared_run

    def dropouts(p):
        run = prepared_run(TrainConfig(base_model=tiny_with_prompts, train_data=str(small_beir),
                                       output_dir="unused", dev_fraction=0.25, device="cpu",
                                       attention_dropout=p))
        bert = run.model[0].auto_model
        probs = {(layer.attention.self.dropout.p, layer.attention.self.dropout_prob)
                 for layer in bert.encoder.layer}
        return probs, bert.config.attention_probs_dropout_prob

    assert dropouts(0.0) == ({(0.0, 0.0)}, pytest.approx(0.1))
    assert dropouts(0.05) == ({(0.05, 0.05)}, pytest.approx(0.1))
    assert dropouts(None) == ({(0.1, 0.1)}, pytest.approx(0.1))


def test_attention_dropout_is_refused_where_it_cannot_apply(tmp_path):
    from transformers import GPT2Config

    from bertino_rag.training.hardware import attention_dropout_kwargs

    with pytest.raises(ValueError, match=r"attention_dropout must be in \[0, 1\)"):
        TrainConfig(attention_dropout=1.0)
    GPT2Config(n_layer=1).save_pretrained(tmp_path)  # names its dropout attn_pdrop
    with pytest.raises(ValueError, match="has none of .*leave attention_dropout unset"):
        attention_dropout_kwargs(str(tmp_path), 0.0)
    assert attention_dropout_kwargs(str(tmp_path), None)[0] == {}


def test_length_sorted_mini_batches_pad_less_with_the_same_loss_and_gradients(minilm_path,
                                                                               squad):
    """The cached loss sorted by length (the default) embeds fewer padded tokens than the
    batch's order, and its Matryoshka loss and gradients are the same."""
    from sentence_transformers import SentenceTransformer

    from bertino_rag._deps import st_module
    from bertino_rag.training.trainer import length_sorted

    losses = st_module("losses")
    CachedMultipleNegativesRankingLoss = losses.CachedMultipleNegativesRankingLoss
    MatryoshkaLoss = losses.MatryoshkaLoss

    model = SentenceTransformer(minilm_path, device="cpu")
    model.eval()  # no dropout: both runs must see the same network
    model.max_seq_length = 512  # at MiniLM's 256 most paragraphs are cut to one length
    qids = sorted(squad.qrels)[:8]
    queries = [squad.queries[q] for q in qids]
    positives = [squad.corpus[next(iter(squad.qrels[q]))]["text"] for q in qids]
    others = [d["text"] for d in list(squad.corpus.values())[-8:]]  # a column of other lengths
    prepare = getattr(model, "preprocess", None) or model.tokenize
    features = [prepare(col) for col in (queries, positives, others)]
    labels = torch.zeros(8)
    tokens: list[int] = []
    hook = model[0].register_forward_pre_hook(
        lambda module, args: tokens.append(int(args[0]["input_ids"].numel())))

    def run(loss_class):
        tokens.clear()
        model.zero_grad()
        inner = loss_class(model, mini_batch_size=2, scale=50.0)
        loss = MatryoshkaLoss(model, inner, [384, 128], [1.0, 0.5])
        value = loss([{k: v.clone() if isinstance(v, torch.Tensor) else v
                       for k, v in f.items()} for f in features], labels)
        value.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return float(value.detach()), grads, sum(tokens)

    plain, plain_grads, plain_tokens = run(CachedMultipleNegativesRankingLoss)
    sorted_, sorted_grads, sorted_tokens = run(length_sorted(CachedMultipleNegativesRankingLoss))
    hook.remove()
    assert sorted_tokens < plain_tokens  # both passes of the cached loss pad less
    assert sorted_ == pytest.approx(plain, rel=1e-5)
    assert set(sorted_grads) == set(plain_grads) and len(plain_grads) > 50
    # all gradients as one vector (the key biases' are rounding noise around an exact 0: a
    # softmax does not see a bias added to every key)
    plain_all = torch.cat([g.flatten() for g in plain_grads.values()])
    sorted_all = torch.cat([sorted_grads[n].flatten() for n in plain_grads])
    assert float((sorted_all - plain_all).norm() / plain_all.norm()) < 1e-4
