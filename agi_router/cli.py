"""``agi-router`` command line.

    agi-router serve [--config FILE] [--host H] [--port P]
    agi-router directory import FILE.csv [--replace] [--config FILE]
    agi-router policy check [FILE] [--config FILE]
    agi-router motive classify [FILE|-] [--config FILE]
    agi-router speech label [DIR] [--player CMD] | eval DIR [--json FILE]
    agi-router prompts list | build DIR [--voice fr+f2]
    agi-router asterisk setup [--etc DIR] [--sounds DIR] [--rebuild-prompts]
    agi-router asterisk agent add NAME --queue Q[:PENALTY]... [--etc DIR] | agent remove NAME [--etc DIR]
    agi-router asterisk accounts [--passwords]
    agi-router audit explain CALL_ID [--config FILE]
    agi-router pseudonym NUMBER [--config FILE]

Exit status: 0 success, 2 invalid input (with a message naming the file and key or line).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path

from . import __version__
from .config import Settings, load_settings
from .exceptions import ConfigError, DirectoryImportError, NumberFormatError
from .logs import setup_logging

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agi-router", description="FastAGI call router for the 3646 hotline")
    p.add_argument("--config", type=Path, help="settings file (default: $AGI_ROUTER_CONFIG, else built-in defaults)")
    p.add_argument("--version", action="version", version=f"agi-router {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    s = sub.add_parser("serve", help="run the FastAGI router")
    s.add_argument("--host", help="override agi.host")
    s.add_argument("--port", type=int, help="override agi.port")
    d = sub.add_parser("directory", help="account directory tools")
    dsub = d.add_subparsers(dest="dcmd", required=True, metavar="ACTION")
    imp = dsub.add_parser("import", help="import a CSV (number,last_login,flags); all rows or none")
    imp.add_argument("file", type=Path)
    imp.add_argument("--replace", action="store_true", help="replace the whole directory instead of merging")
    pol = sub.add_parser("policy", help="policy tools")
    psub = pol.add_subparsers(dest="pcmd", required=True, metavar="ACTION")
    chk = psub.add_parser("check", help="validate a policy file (default: the configured one)")
    chk.add_argument("file", type=Path, nargs="?")
    mo = sub.add_parser("motive", help="the motive classifier")
    mosub = mo.add_subparsers(dest="mocmd", required=True, metavar="ACTION")
    cl = mosub.add_parser(
        "classify",
        help="read transcripts (one per line) and print one JSON line each: level, motive, queue, several "
        "requests, person asked for (the code path a live call takes after recognition)",
    )
    cl.add_argument("file", nargs="?", default="-", help="a UTF-8 text file, or - for standard input (default)")
    sp = sub.add_parser("speech", help="measure recognition on your own calls")
    spsub = sp.add_subparsers(dest="spcmd", required=True, metavar="ACTION")
    lab = spsub.add_parser("label", help="label the sampled capture audio (appends to DIR/labels.tsv)")
    lab.add_argument("dir", type=Path, nargs="?", help="default: the [sampling] folder")
    lab.add_argument("--player", help="command to play each sample's WAV, e.g. 'play -q' (sox) or 'aplay -q'")
    ev = spsub.add_parser(
        "eval",
        help="recognise and route every labelled file of DIR (samples or WAVs + labels.tsv); print accuracy, "
        "queue accuracy, misroutes, re-prompts, confirmations, WER, latency and the thresholds that fit this data",
    )
    ev.add_argument("dir", type=Path)
    ev.add_argument("--json", type=Path, help="also write the full report (per file) to this file")
    pr = sub.add_parser("prompts", help="French prompts for Asterisk")
    prsub = pr.add_subparsers(dest="prcmd", required=True, metavar="ACTION")
    prsub.add_parser("list", help="print every prompt id and its text (tab-separated)")
    prb = prsub.add_parser("build", help="speak every prompt (espeak-ng + sox) into DIR/router/*.wav, 8 kHz")
    prb.add_argument("dir", type=Path)
    prb.add_argument("--voice", default="fr+f2")
    prb.add_argument("--only-missing", action="store_true")
    ast = sub.add_parser("asterisk", help="install the Asterisk side (configuration, shared AMI secret, prompts)")
    astsub = ast.add_subparsers(dest="astcmd", required=True, metavar="ACTION")
    setup = astsub.add_parser(
        "setup",
        help="copy asterisk/*.conf and the router's AMI secret into --etc, the prompts into --sounds "
        "(and the router's own sounds_dir)",
    )
    setup.add_argument("--etc", type=Path, help="Asterisk's configuration folder, e.g. /etc/asterisk")
    setup.add_argument("--sounds", type=Path, help="Asterisk's French sounds folder, e.g. /var/lib/asterisk/sounds/fr")
    setup.add_argument("--voice", default="fr+f2")
    setup.add_argument("--rebuild-prompts", action="store_true", help="speak every prompt again")
    setup.add_argument("--sip-only", action="store_true",
                       help="only the SIP accounts, TLS certificate and their includes (e.g. a volume shared "
                       "with Asterisk's container)")  # fmt: skip
    setup.add_argument(
        "--etc-as",
        type=Path,
        metavar="DIR",
        help="where Asterisk sees --etc (another container: /etc/asterisk), for the certificate paths",
    )
    agent = astsub.add_parser("agent", help="add or remove an agent's SIP account (generated password)")
    agsub = agent.add_subparsers(dest="agcmd", required=True, metavar="ACTION")
    agadd = agsub.add_parser("add", help="a new agent with a generated password and its queues")
    agadd.add_argument("name", help="SIP user name (lower-case letters, digits, - or _), e.g. agent4")
    agadd.add_argument("--queue", action="append", default=[], metavar="Q[:PENALTY]",
                       help="a queue the agent answers (repeat); penalty 0 = called first")  # fmt: skip
    agadd.add_argument("--etc", type=Path, help="also rewrite the includes in Asterisk's configuration folder")
    agrm = agsub.add_parser("remove", help="delete an agent's account")
    agrm.add_argument("name")
    agrm.add_argument("--etc", type=Path, help="also rewrite the includes in Asterisk's configuration folder")
    accs = astsub.add_parser("accounts", help="list the line's SIP accounts")
    accs.add_argument("--passwords", action="store_true", help="show the passwords too")
    au = sub.add_parser("audit", help="the per-call audit trail")
    ausub = au.add_subparsers(dest="aucmd", required=True, metavar="ACTION")
    ex = ausub.add_parser("explain", help="why a call went where it went")
    ex.add_argument("call_id", help="Asterisk's Uniqueid of the call")
    rp = sub.add_parser(
        "replay",
        help="run policies over a call log (the audit trail, a CSV, or a synthetic day) before one goes live: "
        "who each one ends, who reaches a person, waits, by caller segment",
    )
    rp.add_argument("logs", type=Path, nargs="*", help="audit trail files (*.jsonl) or CSV call logs")
    rp.add_argument("--policy", type=Path, action="append", help="a policy file (repeat to compare; "
                    "default: the bundled 2024 policy and its safeguarded version)")  # fmt: skip
    rp.add_argument("--synth", type=int, metavar="N", help="replay a synthetic weekday of N calls instead")
    rp.add_argument("--agents", type=int, default=20, help="agents per queue in the queue model (default 20)")
    rp.add_argument("--handling-s", type=float, default=360.0, help="handling time per call (default 360 s)")
    rp.add_argument("--patience-s", type=float, default=600.0, help="a caller abandons after this wait (600 s)")
    rp.add_argument("--out", type=Path, help="write report.md, differences.csv and PNG plots here")
    rp.add_argument("--seed", type=int, default=3646)
    ps = sub.add_parser("pseudonym", help="print the pseudonym of a number (to find a caller in logs)")
    ps.add_argument("number")
    return p


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from .motives.catalogue import Catalogue
    from .policy.config import Policy, default_policy_path, load_policy
    from .replay import Outcome, QueueModelConfig, read_audit, read_csv, replay, synthetic_day
    from .replay.report import table, write_report

    if (args.synth is None) == (not args.logs):
        raise ConfigError("give call logs (audit *.jsonl or CSV files) or --synth N, not both and not neither")
    if args.agents < 1 or args.handling_s <= 0 or args.patience_s < 0 or (args.synth is not None and args.synth < 1):
        raise ConfigError("--agents >= 1, --handling-s > 0, --patience-s >= 0, --synth >= 1")
    catalogue = Catalogue.load(settings.catalogue_file)
    paths = args.policy or [default_policy_path(), default_policy_path().with_name("policy-3646-safeguarded.toml")]
    policies = [load_policy(p, catalogue=catalogue) for p in paths]
    if args.synth is not None:
        calls = synthetic_day(args.synth, seed=args.seed, catalogue=catalogue, deflectable=policies[0].deflect_motives)
        source = f"a synthetic weekday of {args.synth} calls (seed {args.seed}; assumed shares, see replay/synth.py)"
    else:
        calls = []
        for log in args.logs:
            calls += read_audit(log) if log.suffix in (".jsonl", ".json") or ".jsonl." in log.name else read_csv(log)
        source = f"{len(calls)} calls from {', '.join(str(p) for p in args.logs)}"
    model = QueueModelConfig(args.agents, args.handling_s, args.patience_s)
    results: dict[str, tuple[Policy, list[Outcome]]] = {}
    for p in policies:
        label = p.label if p.label not in results else f"{p.label}#{len(results)}"
        results[label] = (p, asyncio.run(replay(calls, p, model)))
    print(table(results))
    if args.out is not None:
        notes = [source, f"queue model: {args.agents} agents per queue, {args.handling_s:g} s per call, "
                 f"abandon after {args.patience_s:g} s, first come first served"]  # fmt: skip
        print(f"report: {write_report(args.out, results, notes)}")
    return 0


def _hoist_config(argv: list[str]) -> list[str]:
    """``--config FILE`` is accepted anywhere (``agi-router serve --config x.toml`` too): moved to the front."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest.extend(argv[i:])
            break
        if a == "--config" and i + 1 < len(argv):
            front += argv[i : i + 2]
            i += 2
            continue
        (front if a.startswith("--config=") else rest).append(a)
        i += 1
    return front + rest


def _sip_accounts(settings: Settings, args: argparse.Namespace) -> int:
    from .asterisk_setup import asterisk_conf_dir, install_sip
    from .sip.accounts import AccountBook, Membership
    from .sip.pjsip import queue_names

    path = settings.path(settings.sip.accounts_file)
    if args.astcmd == "accounts":
        if not path.exists():
            raise ConfigError("no SIP accounts yet: run `agi-router asterisk setup --etc DIR` first", file=str(path))
        for acc in AccountBook.load(path).accounts.values():
            queues = ",".join(f"{m.queue}:{m.penalty}" for m in acc.queues) or "-"
            print("\t".join([acc.name, acc.role, queues] + ([acc.password] if args.passwords else [])))
        return 0
    book, _ = AccountBook.load_or_create(path)
    if args.agcmd == "add":
        if not args.queue:
            raise ConfigError("agent add: name at least one --queue (e.g. --queue remboursements --queue accueil:5)")
        known = queue_names((asterisk_conf_dir() / "queues.conf").read_text())
        acc = book.add_agent(args.name, [Membership.parse(q) for q in args.queue], known_queues=known)
        print(f"agent {acc.name}: password {acc.password} (shown once; `agi-router asterisk accounts --passwords`)")
    else:
        book.remove(args.name)
        print(f"agent {args.name} removed")
    if args.etc is not None:
        install_sip(settings, args.etc)
        reload = "asterisk -rx 'module reload res_pjsip.so' -rx 'queue reload members'"
        print(f"written into {args.etc}; apply with: {reload}")
    else:
        print("then run `agi-router asterisk setup --etc DIR` (or give --etc) and reload res_pjsip and the queues")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(_hoist_config(list(sys.argv[1:] if argv is None else argv)))
    try:
        settings = load_settings(args.config)
        setup_logging(settings.log.level, settings.log.json)
        return _dispatch(args, settings)
    except DirectoryImportError as exc:
        print(f"agi-router: import refused: {exc}", file=sys.stderr)
        return 2
    except (ConfigError, NumberFormatError) as exc:
        print(f"agi-router: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.cmd == "serve":
        agi = settings.agi
        if args.host or args.port is not None:
            agi = dataclasses.replace(
                agi, host=args.host or agi.host, port=args.port if args.port is not None else agi.port
            )
            settings = dataclasses.replace(settings, agi=agi)
        from .app import run

        if settings.agi.event_loop in ("auto", "uvloop"):
            try:
                import uvloop
            except ImportError:
                if settings.agi.event_loop == "uvloop":
                    raise ConfigError("agi.event_loop = 'uvloop' but uvloop is not installed") from None
            else:
                uvloop.run(run(settings))
                return 0
        asyncio.run(run(settings))
        return 0
    if args.cmd == "replay":
        return _replay(args, settings)
    if args.cmd == "directory":
        from .app import make_pseudonymizer
        from .directory.sqlite import import_csv

        db = settings.path(settings.directory.sqlite_path)

        def progress(rows: int) -> None:  # on a terminal only: logs and pipes get the final line
            print(f"\r{rows:,} rows checked and staged...", end="", file=sys.stderr, flush=True)

        report = import_csv(
            args.file, db, make_pseudonymizer(settings), replace=args.replace,
            progress=progress if sys.stderr.isatty() else None,
        )  # fmt: skip
        if sys.stderr.isatty():
            print(file=sys.stderr)
        print(
            f"imported {report.rows} number(s), {report.with_account} with an online account, into {db}"
            f"{' (replaced)' if report.replaced else ''}"
        )
        return 0
    if args.cmd == "policy":
        from .motives.catalogue import Catalogue
        from .policy.config import load_policy

        catalogue = Catalogue.load(settings.catalogue_file)
        policy = load_policy(args.file or settings.policy_file, catalogue=catalogue)
        print(
            f"ok: {policy.label} ({policy.description}); catalogue {catalogue.version}, "
            f"{len(policy.deflect_motives)} deflectable motive(s)"
        )
        return 0
    if args.cmd == "motive":
        return _classify(args.file, settings)
    if args.cmd == "speech":
        return _speech(args, settings)
    if args.cmd == "prompts":
        from .motives.catalogue import Catalogue
        from .prompts import build_prompts, prompt_texts

        catalogue = Catalogue.load(settings.catalogue_file)
        if args.prcmd == "list":
            for pid, text in prompt_texts(catalogue).items():
                print(f"{pid}\t{text}")
            return 0
        files = build_prompts(catalogue, args.dir, voice=args.voice, only_missing=args.only_missing)
        print(f"wrote {len(files)} prompt(s) under {args.dir}")
        return 0
    if args.cmd == "asterisk" and args.astcmd != "setup":
        return _sip_accounts(settings, args)
    if args.cmd == "asterisk":
        from .asterisk_setup import install_sip, setup_asterisk

        if args.etc is None and args.sounds is None:
            raise ConfigError("asterisk setup: name --etc (configuration) and/or --sounds (prompts)")
        if args.sip_only:
            if args.etc is None:
                raise ConfigError("asterisk setup --sip-only: name --etc DIR")
            for line in install_sip(settings, args.etc, args.etc_as).lines():
                print(line)
            return 0
        setup = setup_asterisk(settings, args.etc, args.sounds, voice=args.voice, rebuild_prompts=args.rebuild_prompts,
                               etc_as=args.etc_as)  # fmt: skip
        for line in setup.lines():
            print(line)
        return 0
    if args.cmd == "audit":
        from .audit import explain, find

        records = list(find(settings.path(settings.audit_file), args.call_id))
        if not records:
            print(f"agi-router: no audit record for call {args.call_id}", file=sys.stderr)
            return 1
        for rec in records:
            print(explain(rec))
        return 0
    if args.cmd == "pseudonym":
        from .app import make_pseudonymizer
        from .numbers import normalize_e164

        print(make_pseudonymizer(settings).of_e164(normalize_e164(args.number)))
        return 0
    raise AssertionError(args.cmd)


def _classify(source: str, settings: Settings) -> int:
    import json

    from .app import build_understander
    from .motives.catalogue import Catalogue

    if source == "-":
        stream = sys.stdin
    else:
        try:
            stream = open(source, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read transcripts: {exc.strerror or exc}", file=source) from None
    understander = build_understander(settings, Catalogue.load(settings.catalogue_file))
    n = 0
    try:
        for n, line in enumerate(stream, 1):  # noqa: B007 - n names the bad line below
            text = line.strip()
            if text:
                print(json.dumps(understander.understand(text).as_json(), ensure_ascii=False), flush=True)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"line {n + 1}: not UTF-8 ({exc.reason}); save the file as UTF-8", file=source) from None
    finally:
        if stream is not sys.stdin:
            stream.close()
    return 0


def _speech(args: argparse.Namespace, settings: Settings) -> int:
    from .app import build_recognizer, build_understander, sample_store
    from .motives.catalogue import Catalogue
    from .policy.config import load_policy
    from .speech import evaluation

    catalogue = Catalogue.load(settings.catalogue_file)
    store = sample_store(settings)
    if args.spcmd == "label":
        folder = store.folder = args.dir or store.folder
        n = evaluation.label_samples(folder, catalogue, store, player=args.player)
        print(f"labelled {n} sample(s) in {folder / evaluation.LABELS}")
        return 0
    store.folder = args.dir
    deflectable = frozenset(load_policy(settings.policy_file, catalogue=catalogue).deflect_motives)
    report = evaluation.evaluate_folder(
        args.dir,
        catalogue,
        build_recognizer(settings),
        build_understander(settings, catalogue),
        deflectable,
        store=store,
        progress=sys.stderr if sys.stderr.isatty() else None,
    )
    if args.json:
        args.json.write_text(evaluation.dumps(report), encoding="utf-8")
    summary = {k: v for k, v in report.items() if k not in ("report", "per_file")}
    print(evaluation.dumps(summary))
    return 0
