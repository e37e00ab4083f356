from cdp.cli import main

raise SystemExit(main())
