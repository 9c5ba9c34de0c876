"""int8 recipes compared: why OpenVINO int8 is configured as it is, and why ONNX int8 is not fused.

Usage:
    python benchmarks/bench_int8_recipes.py openvino
    python benchmarks/bench_int8_recipes.py onnx-fused [--n 192] [--rounds 5] [--no-ndcg]

openvino: static int8 of the packaged MiniLM with optimum-intel's defaults (SmoothQuant 0.95 on
every MatMul) and with bertino-rag's recipe (``_backends``: SmoothQuant 0.7, the FFN
down-projections left in float), both calibrated on the shipped Italian set; cosine of each
text's int8 vector to its float vector (OpenVINO fp32), mean and worst, on 64 squad-it-dev
paragraphs and 300 stsb-it dev sentences. Then the shipped int8 model with its float parts in
fp32 (the default) and in bf16: cosine to torch of 300 questions encoded in batches, and of
the worst three encoded alone.

onnx-fused: the alternative to ``export_dynamic_quantized_onnx_model``: onnxruntime's
transformer optimizer (fused attention, LayerNorm, GELU), then ``quantize_dynamic`` per channel
(``DefaultTensorType=FLOAT`` gets it past the fused ops), with every MatMul quantized or with
the FFN down-projections left in float. Reported: cosine to torch as above; seconds for the
64 paragraphs against the fused fp32 graph; throughput on ``--n`` paragraphs against plain
``SentenceTransformer.encode`` (interleaved, as ``bench_encode.py throughput``); NDCG@10 per
dim on all of squad-it-dev for the all-quantized variant (as ``bench_encode.py quality``).
Results are printed as JSON lines.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
from _indexing_common import (
    DATA,
    SQUAD,
    interleave,
    machine,
    median,
    minilm,
    squad_paragraphs,
)

STSB_DEV = DATA / "stsb-it" / "dev.csv"


def texts_and_reference():
    """64 paragraphs, 300 short sentences, and their torch vectors (normalized)."""
    from sentence_transformers import SentenceTransformer

    paragraphs = [d["text"] for d in squad_paragraphs(64)]
    with open(STSB_DEV, encoding="utf-8") as fh:
        sentences = [row[0] for row in csv.reader(fh)][:300]
    torch_model = SentenceTransformer(minilm(), device="cpu")
    ref = {name: torch_model.encode(t, normalize_embeddings=True)
           for name, t in (("paragraphs", paragraphs), ("sentences", sentences))}
    return {"paragraphs": paragraphs, "sentences": sentences}, ref


def mean_pool(tokenizer, run, texts: list[str], inputs: list[str]) -> np.ndarray:
    """Mean-pooled, normalized vectors from a raw graph ``run(feed) -> last_hidden_state``."""
    out = []
    for start in range(0, len(texts), 32):
        enc = tokenizer(texts[start:start + 32], padding=True, truncation=True, max_length=256,
                        return_tensors="np")
        hidden = run({k: enc[k].astype(np.int64) for k in inputs})
        mask = enc["attention_mask"][..., None]
        v = (hidden * mask).sum(1) / mask.sum(1)
        out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    return np.concatenate(out)


def cosines(tokenizer, run, inputs, texts, ref) -> dict:
    row = {}
    for name in ("paragraphs", "sentences"):
        cos = np.sum(mean_pool(tokenizer, run, texts[name], inputs) * ref[name], axis=1)
        row[name] = {"mean": round(float(cos.mean()), 4), "min": round(float(cos.min()), 4)}
    return row


def openvino_recipes() -> None:
    import nncf
    import openvino as ov
    from transformers import AutoTokenizer

    from bertino_rag import Encoder
    from bertino_rag.encoder.backends import (
        SMOOTH_QUANT_ALPHA,
        _gelu_fed_matmuls,
        default_calibration_texts,
    )

    nncf.set_log_level(logging.ERROR)
    xml = Encoder(minilm(), backend="openvino").backend_file
    tokenizer = AutoTokenizer.from_pretrained(minilm())
    texts, ref = texts_and_reference()
    calibration = default_calibration_texts()
    dataset = nncf.Dataset([
        {k: np.asarray([v], dtype=np.int64)
         for k, v in tokenizer(t, truncation=True, max_length=256).items()}
        for t in calibration])
    core = ov.Core()
    inputs = ["input_ids", "attention_mask", "token_type_ids"]
    smooth = nncf.AdvancedSmoothQuantParameters
    recipes = {
        "optimum-intel defaults": {},
        "bertino-rag": {
            "advanced_parameters": nncf.AdvancedQuantizationParameters(
                smooth_quant_alphas=smooth(matmul=SMOOTH_QUANT_ALPHA)),
            "ignored_scope": nncf.IgnoredScope(names=_gelu_fed_matmuls(core.read_model(xml))),
        },
    }
    for name, kwargs in recipes.items():
        model = nncf.quantize(core.read_model(xml), dataset, subset_size=len(calibration),
                              model_type=nncf.ModelType.TRANSFORMER, **kwargs)
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        row = cosines(tokenizer, lambda feed, c=compiled: c(feed)[0], inputs, texts, ref)
        print(json.dumps({"bench": "openvino-int8-recipe", "recipe": name, **row}), flush=True)
    batch_dependence()


def batch_dependence() -> None:
    """The shipped int8 model with its float parts in fp32 (the default) and in bf16: the first
    300 squad-it-dev questions encoded in batches against torch, and the worst 3 alone."""
    from bertino_rag import Encoder
    from bertino_rag.data import load_beir

    questions = list(load_beir(SQUAD).queries.values())[:300]
    ref = Encoder(minilm()).encode(questions, kind="query").full
    for hint in ("f32", "bf16"):
        enc = Encoder(minilm(), backend="openvino", quantize="int8",
                      model_kwargs={"ov_config": {"INFERENCE_PRECISION_HINT": hint}})
        cos = np.sum(enc.encode(questions, kind="query").full * ref, axis=1)
        worst = np.argsort(cos)[:3]
        alone = [float(enc.encode([questions[i]], kind="query").full[0] @ ref[i]) for i in worst]
        print(json.dumps({"bench": "openvino-int8-batches", "float_parts": hint,
                          "questions": len(questions), "below_0.98": int((cos < 0.98).sum()),
                          "min": round(float(cos.min()), 4),
                          "worst_3_in_batch": [round(float(cos[i]), 4) for i in worst],
                          "worst_3_alone": [round(x, 4) for x in alone]}), flush=True)


def onnx_fused(n: int, rounds: int, ndcg: bool) -> None:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from bertino_rag import Encoder

    logging.disable(logging.WARNING)
    base = Path(Encoder(minilm(), backend="onnx").backend_file)
    folder = base.parent.parent
    work = base.parent / "bench-fused"
    work.mkdir(exist_ok=True)
    try:
        fused = work / "model_fused.onnx"
        optimize_model(str(base), model_type="bert", num_heads=0, hidden_size=0) \
            .save_model_to_file(str(fused))
        graph = onnx.load(str(fused))
        producer = {o: node for node in graph.graph.node for o in node.output}
        gelu_fed = [node.name for node in graph.graph.node if node.op_type == "MatMul"
                    and node.input[0] in producer
                    and producer[node.input[0]].op_type in ("BiasGelu", "Gelu", "FastGelu")]
        variants = {"all MatMuls int8": [], "FFN down-projections float": gelu_fed}
        files = {}
        for name, exclude in variants.items():
            path = work / f"model_fused_qint8_{len(files)}.onnx"
            quantize_dynamic(str(fused), str(path), weight_type=QuantType.QInt8,
                             per_channel=True, nodes_to_exclude=exclude,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            files[name] = path

        tokenizer = AutoTokenizer.from_pretrained(minilm())
        texts, ref = texts_and_reference()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions = {name: ort.InferenceSession(str(p), options,
                                               providers=["CPUExecutionProvider"])
                    for name, p in {"fused fp32": fused, **files}.items()}
        inputs = [i.name for i in sessions["fused fp32"].get_inputs()]
        runs = {}
        for name, session in sessions.items():
            def run(feed, s=session):
                return s.run(None, feed)[0]
            if name != "fused fp32":
                row = cosines(tokenizer, run, inputs, texts, ref)
                print(json.dumps({"bench": "onnx-fused-cosine", "variant": name, **row}),
                      flush=True)
            runs[name] = (lambda r=run: mean_pool(tokenizer, r, texts["paragraphs"], inputs))
        secs = interleave(runs, 3)
        print(json.dumps({"bench": "onnx-fused-64-paragraphs",
                          **{k: round(median(v), 3) for k, v in secs.items()}}), flush=True)

        # throughput and quality through sentence-transformers, as bench_encode.py measures
        paragraphs = [d["text"] for d in squad_paragraphs(n)]
        plain = SentenceTransformer(minilm(), device="cpu")
        candidate = SentenceTransformer(
            str(folder), device="cpu", backend="onnx",
            model_kwargs={"file_name": str(files["all MatMuls int8"].relative_to(folder)),
                          "provider": "CPUExecutionProvider", "session_options": options})
        plain.encode(paragraphs[:32])
        candidate.encode(paragraphs[:32])
        secs = interleave({"plain-torch": lambda: plain.encode(paragraphs, batch_size=32),
                           "fused-int8": lambda: candidate.encode(paragraphs, batch_size=32)},
                          rounds)
        print(json.dumps({"bench": "onnx-fused-throughput", "n": n,
                          "speedup_vs_plain": round(median(secs["plain-torch"])
                                                    / median(secs["fused-int8"]), 3),
                          "runs_s": {k: [round(x, 3) for x in v] for k, v in secs.items()}}),
              flush=True)
        if ndcg:
            from bench_encode import ndcg_per_dim

            for name, model in (("torch", plain), ("fused-int8", candidate)):
                scores, n_queries = ndcg_per_dim(model.encode)
                print(json.dumps({"bench": "onnx-fused-quality", "backend": name,
                                  "queries": n_queries, "ndcg@10": scores}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["openvino", "onnx-fused"])
    ap.add_argument("--n", type=int, default=192)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-ndcg", action="store_true")
    args = ap.parse_args()
    print(json.dumps({"machine": machine()}), flush=True)
    if args.what == "openvino":
        openvino_recipes()
    else:
        onnx_fused(args.n, args.rounds, not args.no_ndcg)


if __name__ == "__main__":
    main()
