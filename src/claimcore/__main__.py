from claimcore.ops.cli import main

raise SystemExit(main())
