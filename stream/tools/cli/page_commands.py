"""The profile page and the corrections it writes: ``portrait page``, ``portrait labels export``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stream.tools.cli.app import (
    app,
    broker_settings_or_exit,
    configure_logging,
    quiet_kafka_clients,
)

labels_app = typer.Typer(help="Corrections of verdicts made on the profile page (labels.v1).",
                         no_args_is_help=True)  # fmt: skip
app.add_typer(labels_app, name="labels")


@app.command()
def page(verbose: bool = False) -> None:
    """Serve the profile page: why a user's profile says what it says, with a "wrong verdict"
    control on each recent comment.

    Binds to PORTRAIT_PAGE__HOST:PORTRAIT_PAGE__PORT (127.0.0.1:8700 by default; another address
    needs PORTRAIT_PAGE__TOKEN, sent by clients as "Authorization: Bearer <token>"). Reads every
    profile from PORTRAIT_TOPICS__PROFILE_UPDATES into a local copy (PORTRAIT_STATE_DIR/page),
    comment texts from their source records on demand, and writes corrections to
    PORTRAIT_TOPICS__LABELS. Open http://HOST:PORT/users/<user id>; JSON at /api/users/<user id>.
    Runs until Ctrl-C.
    """
    configure_logging(verbose)
    quiet_kafka_clients(verbose)
    from models.contract.errors import BrokerUnavailableError
    from stream.tools.page.server import serve_page

    settings = broker_settings_or_exit()
    try:
        serve_page(
            settings,
            lambda url: typer.echo(
                f"profile page: {url}/ (reading {settings.topics.profile_updates}; Ctrl-C stops)"
            ),
        )
    except (BrokerUnavailableError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@labels_app.command("export")
def export(
    file: Annotated[Path, typer.Argument(help="The training file to write (JSONL).")],
    weight: Annotated[
        float,
        typer.Option(
            min=0.01,
            max=100.0,
            help="Each correction's weight in the training loss, written as its 'confidence' "
            "column (portrait train weights every row's loss by it; the bundled datasets' rows "
            "weigh at most 1). E.g. 3 = a correction counts as much as three dataset rows.",
        ),
    ] = 1.0,
    verbose: bool = False,
) -> None:
    """Write the corrections on PORTRAIT_TOPICS__LABELS as a training file for
    `portrait train --data FILE` (columns text, label, lang, and where each came from).

    Reads the topic from the beginning; keeps the last correction per (user, comment) and drops
    the corrections of users erased since (their tombstones). Prints the number of rows; exit
    code 1 when the broker cannot be reached.
    """
    configure_logging(verbose)
    quiet_kafka_clients(verbose)
    from models.contract.errors import BrokerUnavailableError
    from stream.kafka_admin import kafka_client_config
    from stream.labels import live_corrections, training_rows
    from stream.tools.follow import assign_all, group_less_consumer, iter_records

    settings = broker_settings_or_exit()
    try:
        consumer = group_less_consumer(kafka_client_config(settings.kafka))
        try:
            assign_all(consumer, [settings.topics.labels])
            records = [(r.key, r.value) for r in iter_records(consumer, follow=False)]
        finally:
            consumer.close()
    except BrokerUnavailableError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    rows = training_rows(live_corrections(records), weight=weight)
    file.parent.mkdir(parents=True, exist_ok=True)
    with file.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    typer.echo(f"{len(rows)} corrections written to {file} (from {len(records)} records of "
               f"{settings.topics.labels})")  # fmt: skip
