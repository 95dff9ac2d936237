"""``wasmgate dead-letters``: list, show, replay and purge a trigger's dead letters.

The command glue only: argument parsing, output (a table or ``--json``), the confirmation
of a purge and the progress of a bulk replay. What each broker does is in its store module.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from gateway.dead_letters.model import (
    DeadLetter,
    DeadLetterNotFound,
    DeadLetterStore,
    NotReplayable,
)
from gateway.dead_letters.stores import TriggerRef, open_store
from gateway.errors import BrokerError, ConfigError, WasmgateError
from gateway.progress import is_interactive
from gateway.redaction import redact_secrets
from triggers.delivery import describe

PREVIEW_BYTES = 1024
# --where keys: a dead letter's field; reason matches a substring, the others exactly.
WHERE_KEYS = ("reason", "error-kind", "status", "attempts", "component")


def add_parser(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """Register ``dead-letters`` and its actions on the top-level subparsers."""
    parser = sub.add_parser(
        "dead-letters", formatter_class=formatter,
        help="list, show, replay or purge a broker trigger's dead letters",
        description="Inspect the messages a broker trigger dead-lettered (Kafka topic, "
                    "JetStream subject, RabbitMQ dead-letter queue, Redis stream), put them "
                    "back on their source after a fix, or drop them. A trigger is named "
                    "<kind>[<index>] (e.g. kafka[0]), by its kind or its component when "
                    "that is unambiguous, or left out when only one has dead letters. See "
                    "docs/dead-letters.md.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="<action>")
    manifest_help = "path to wasmgate.toml or its directory (default: ./wasmgate.toml)"

    listing = actions.add_parser("list", formatter_class=formatter,
                                 help="count and list them (read only)")
    listing.add_argument("trigger", nargs="?", help="which trigger (see above)")
    listing.add_argument("manifest_arg", nargs="?", metavar="manifest", help=manifest_help)
    listing.add_argument("--json", action="store_true", help="print JSON")

    show = actions.add_parser("show", formatter_class=formatter,
                              help="one dead letter: headers, origin, body preview")
    show.add_argument("id", help="its id, as `list` prints it")
    show.add_argument("--json", action="store_true", help="print JSON")

    replay = actions.add_parser("replay", formatter_class=formatter,
                                help="put dead letters back on their original source")
    replay.add_argument("id", nargs="?", help="one dead letter's id")
    replay.add_argument("--all", action="store_true", help="every dead letter")
    replay.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="those matching (repeatable, all must match): reason=TEXT "
                             "(a substring), error-kind=, status=, attempts=, component=")
    replay.add_argument("--dry-run", action="store_true",
                        help="print what would be replayed, change nothing")

    purge = actions.add_parser("purge", formatter_class=formatter,
                               help="delete every dead letter (asks first)")
    purge.add_argument("trigger_arg", nargs="?", metavar="trigger",
                       help="which trigger (see above)")
    purge.add_argument("--yes", action="store_true", help="do not ask")

    for action in (listing, show, replay, purge):
        action.add_argument("--manifest", default=None, help=manifest_help)
    for action in (show, replay):
        action.add_argument("--trigger", default=None, help="which trigger (see above)")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(execute(args))


async def execute(args: argparse.Namespace, *, out: TextIO | None = None,
                  confirm_in: TextIO | None = None) -> int:
    """Run one ``dead-letters`` action; the exit code."""
    stdout = out if out is not None else sys.stdout
    trigger, manifest = _target(args)
    ref, store = await open_store(manifest, trigger)
    try:
        return await _ACTIONS[args.action](args, ref, store, stdout, confirm_in)
    except WasmgateError:
        raise
    except Exception as exc:
        # A broker client's own error (connection lost, a refusal): one line, no traceback.
        raise BrokerError(f"{store.describe}: {describe(exc)}") from None
    finally:
        await store.close()


def _target(args: argparse.Namespace) -> tuple[str | None, str]:
    trigger = getattr(args, "trigger", None) or getattr(args, "trigger_arg", None)
    manifest = getattr(args, "manifest_arg", None) or args.manifest
    if args.action == "list" and manifest is None and trigger is not None \
            and _looks_like_manifest(trigger):
        trigger, manifest = None, trigger  # `list path/to/wasmgate.toml`
    return trigger, manifest or "wasmgate.toml"


def _looks_like_manifest(text: str) -> bool:
    path = Path(text)
    return text.endswith(".toml") or path.is_dir()


async def _list(args: argparse.Namespace, ref: TriggerRef, store: DeadLetterStore,
                out: TextIO, _: TextIO | None) -> int:
    letters = await store.letters()
    if args.json:
        json.dump({"trigger": ref.name, "destination": store.describe, "count": len(letters),
                   "dead_letters": [letter.summary() for letter in letters]}, out, indent=2)
        out.write("\n")
        return 0
    out.write(f"{len(letters)} dead letter(s) of {ref.name} in {store.describe}\n")
    for letter in letters:
        line = (f"{letter.id}  {letter.time}  status={letter.status or '-'}  "
                f"attempts={letter.attempts or '-'}  {_pairs(letter.origin)}")
        reason = f"{letter.error_kind or '-'}: {redact_secrets(letter.reason) or '-'}"
        out.write(f"{printable(line)}\n    {printable(reason)}\n")
    return 0


async def _show(args: argparse.Namespace, ref: TriggerRef, store: DeadLetterStore,
                out: TextIO, _: TextIO | None) -> int:
    letter = _find(await store.letters(), args.id, store)
    body, encoding = preview(letter.body)
    if args.json:
        json.dump({**letter.summary(), "location": letter.location,
                   "key": None if letter.key is None else preview(letter.key)[0],
                   "headers": [list(h) for h in letter.headers], "body_bytes": len(letter.body),
                   "body_encoding": encoding, "body_preview": body}, out, indent=2)
        out.write("\n")
        return 0
    out.write(f"dead letter {printable(letter.id)} of {ref.name} in {store.describe}\n")
    for name, value in (("time", letter.time), ("reason", redact_secrets(letter.reason)),
                        ("error kind", letter.error_kind), ("status", letter.status),
                        ("attempts", letter.attempts), ("component", letter.component)):
        out.write(f"{name + ':':<12}{printable(value)}\n")
    out.write(f"origin:     {_pairs(letter.origin)}\n")
    out.write(f"stored at:  {_pairs(letter.location)}\n")
    if letter.key is not None:
        out.write(f"key:        {printable(preview(letter.key)[0])}\n")
    out.write("headers:\n")
    for name, value in letter.headers:
        out.write(f"  {printable(name)}: {printable(value)}\n")
    shown = min(len(letter.body), PREVIEW_BYTES)
    # The body's own line breaks are kept; any other control character (a bare `\r` that
    # would let the body overwrite what was printed above it, an escape) is escaped.
    text = "\n".join(printable(line) for line in body.split("\n"))
    out.write(f"body ({len(letter.body)} bytes, {encoding}, first {shown}):\n{text}\n")
    return 0


async def _replay(args: argparse.Namespace, ref: TriggerRef, store: DeadLetterStore,
                  out: TextIO, _: TextIO | None) -> int:
    chosen = sum(bool(x) for x in (args.id, args.all, args.where))
    if chosen != 1:
        raise ConfigError("replay needs exactly one of: an id, --all, or --where KEY=VALUE")
    letters = await store.letters()
    if args.id:
        selected = [_find(letters, args.id, store)]
    elif args.all:
        selected = letters
    else:
        selected = [x for x in letters if matches(x, parse_where(args.where))]
    if args.dry_run:
        for letter in selected:
            out.write(f"would replay {printable(letter.id)} to {_pairs(letter.origin)}\n")
        out.write(f"dry run: {len(selected)} of {len(letters)} dead letter(s) would be "
                  "replayed; nothing changed\n")
        return 0
    progress = _Progress(len(selected))
    done = 0
    skipped: list[str] = []
    try:
        for letter in selected:
            try:
                target = await store.replay(letter, replayed_from=f"{ref.name}:{letter.id}")
            except NotReplayable as exc:
                if args.id:
                    raise
                # One foreign message (oldest first) must not hold back all the others.
                skipped.append(printable(str(exc)))
                continue
            done += 1
            progress.step(printable(f"replayed {letter.id} to {target}"), out)
    except NotReplayable:
        raise
    except Exception as exc:
        progress.end()
        out.write(f"replayed {done} of {len(selected)}; stopped at the next one, which is "
                  f"kept: {redact_secrets(describe(exc))}\n")
        return 1
    progress.end()
    if skipped:
        out.write("".join(f"skipped: {reason}\n" for reason in skipped))
        out.write(f"replayed {done} of {len(selected)}; skipped {len(skipped)}, kept in "
                  f"{store.describe} (`show` them; `purge` drops every dead letter)\n")
        return 1
    out.write(f"replayed {done} dead letter(s) of {ref.name}\n")
    return 0


async def _purge(args: argparse.Namespace, ref: TriggerRef, store: DeadLetterStore,
                 out: TextIO, confirm_in: TextIO | None) -> int:
    letters = await store.letters()
    if not letters:
        out.write(f"no dead letters in {store.describe}\n")
        return 0
    if not args.yes:
        answer_from = confirm_in if confirm_in is not None else sys.stdin
        if not is_interactive(answer_from):
            raise ConfigError(f"purge deletes {len(letters)} dead letter(s) from "
                              f"{store.describe}; pass --yes to confirm (no terminal to ask)")
        out.write(f"delete {len(letters)} dead letter(s) from {store.describe}? [y/N] ")
        out.flush()
        if answer_from.readline().strip().lower() not in ("y", "yes"):
            out.write("nothing deleted\n")
            return 1
    count = await store.purge(letters)
    out.write(f"purged {count} dead letter(s) of {ref.name}\n")
    return 0


_ACTIONS = {"list": _list, "show": _show, "replay": _replay, "purge": _purge}


def _find(letters: list[DeadLetter], ident: str, store: DeadLetterStore) -> DeadLetter:
    for letter in letters:
        if letter.id == ident:
            return letter
    raise DeadLetterNotFound(f"no dead letter {ident!r} in {store.describe} (replayed or "
                             "purged already?); `wasmgate dead-letters list` prints the ids")


def parse_where(terms: list[str]) -> list[tuple[str, str]]:
    """``["reason=boom", "status=500"]`` as (key, value) pairs, a key possibly twice (both
    must match); ConfigError on an unknown key or an empty value."""
    wanted: list[tuple[str, str]] = []
    for term in terms:
        key, sep, value = term.partition("=")
        if not sep or key not in WHERE_KEYS:
            raise ConfigError(f"--where {term!r}: write KEY=VALUE with KEY one of "
                              + ", ".join(WHERE_KEYS))
        if not value:
            # "reason=" is a substring of every reason: it would select every dead letter.
            raise ConfigError(f"--where {term!r}: the value is empty; give one, or use --all "
                              "for every dead letter")
        wanted.append((key, value))
    return wanted


def matches(letter: DeadLetter, wanted: list[tuple[str, str]]) -> bool:
    """Whether ``letter`` has every field ``wanted`` (reason: as a substring)."""
    fields = {"reason": letter.reason, "error-kind": letter.error_kind,
              "status": letter.status, "attempts": letter.attempts,
              "component": letter.component}
    return all(value in fields[key] if key == "reason" else fields[key] == value
               for key, value in wanted)


def _pairs(fields: dict[str, str]) -> str:
    return printable(" ".join(f"{k}={v}" for k, v in fields.items()))


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\x1b``): a dead letter's headers and
    reason come from anyone who could write to the destination, and a terminal would act
    on an escape sequence in them (retitle, clear, rewrite what was printed)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def preview(data: bytes) -> tuple[str, str]:
    """The first PREVIEW_BYTES of ``data`` as text when it is printable UTF-8, else hex."""
    head = data[:PREVIEW_BYTES]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the preview's end is still text.
        try:
            text = head[:-3].decode("utf-8") if len(data) > PREVIEW_BYTES else ""
        except UnicodeDecodeError:
            text = ""
        if not text:
            return head.hex(" "), "hex"
    if all(c.isprintable() or c in "\n\r\t" for c in text):
        return text, "text"
    return head.hex(" "), "hex"


class _Progress:
    """A counter redrawn in place on a terminal; one line per message anywhere else."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.live = is_interactive() and total > 1

    def step(self, line: str, out: TextIO) -> None:
        self.done += 1
        if self.live:
            width = 30
            filled = width * self.done // self.total
            sys.stderr.write(f"\r\x1b[2K[{'#' * filled}{'.' * (width - filled)}] "
                             f"{self.done}/{self.total} replayed")
            sys.stderr.flush()
        else:
            out.write(line + "\n")

    def end(self) -> None:
        if self.live:
            sys.stderr.write("\n")


__all__ = ["add_parser", "execute", "matches", "parse_where", "preview", "printable", "run"]
