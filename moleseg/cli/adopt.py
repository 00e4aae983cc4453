"""``moleseg adopt``: the server's operator hands the personal-mode runs, studies, "My dataset" and device
profiles, and with ``--records`` the saved visits, to one user of shared mode (:mod:`moleseg.engine.adopt`), or
with ``--dry-run`` prints what would move."""

from __future__ import annotations

import argparse
from typing import Callable

from moleseg.cli.common import EXIT_OK, CommandError, printable

#: The line after a move without ``--records``: saved visits stay as they are.
RECORDS_NOTE: str = ("Saved visits are not handed over without --records: they keep the owner they were saved "
                     "with (in personal mode, the server's account), and the admin_users reach them.")
#: The line after a move made while the settings still say personal mode.
STILL_PERSONAL: str = ("The settings still say mode = \"personal\": the app shows these folders to {user} once "
                       "the server runs in shared mode.")
#: The refusal of ``--ownerless`` alone.
OWNERLESS_ALONE: str = "--ownerless adds the visits saved before records had owners to --records: add --records"


def cmd_adopt(args: argparse.Namespace) -> int:
    from moleseg.core.settings import load_settings
    from moleseg.engine.adopt import adopt, adopt_records, plan_adoption, plan_records

    if args.ownerless and not args.records:
        raise CommandError(OWNERLESS_ALONE)
    plan = plan_adoption(args.user)
    visits = plan_records(args.user, args.ownerless) if args.records else None
    print(printable(plan.headline(args.dry_run)))
    if args.dry_run:
        for move in plan.moves:
            print(printable(f"  {plan.move_line(move)}"))
    else:
        adopt(plan, echo=lambda line: print(printable(f"  {line}"), flush=True))
    if visits is not None:
        given = None if args.dry_run else adopt_records(visits)
        print(printable(visits.line(args.dry_run, given)))
    elif plan.moves:
        print(RECORDS_NOTE)
    if plan.moves and not load_settings().shared:
        print(printable(STILL_PERSONAL.format(user=plan.user_name)))
    return EXIT_OK


def add_adopt_command(add: Callable[[str, str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]
                      ) -> None:
    """Register ``moleseg adopt`` with ``add`` (the sub-parser maker of :func:`moleseg.cli.build_parser`)."""
    command = add("adopt", "when switching a server from personal to shared mode: move the data folder's runs, "
                           "studies, My dataset and device profiles (and with --records the saved visits) into "
                           "one user's space", cmd_adopt)
    command.add_argument("--user", required=True, metavar="NAME",
                         help="the user as the sign-in names them (the proxy's user header, or the e-mail)")
    command.add_argument("--records", action="store_true",
                         help="also give the user the visits saved in personal mode (one audit entry each)")
    command.add_argument("--ownerless", action="store_true",
                         help="with --records: also the visits saved before records had owners")
    command.add_argument("--dry-run", action="store_true", help="print what would move; move nothing")
