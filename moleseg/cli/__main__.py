"""``python -m moleseg.cli``: the ``moleseg`` command."""

from moleseg.cli import main

raise SystemExit(main())
