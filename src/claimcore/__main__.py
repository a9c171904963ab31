from claimcore.cli import main

raise SystemExit(main())
