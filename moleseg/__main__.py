"""``python -m moleseg``: the ``moleseg`` command (:func:`moleseg.cli.main`)."""

from moleseg.cli import main

raise SystemExit(main())
