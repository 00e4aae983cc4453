from moleseg.cli import main

raise SystemExit(main())
