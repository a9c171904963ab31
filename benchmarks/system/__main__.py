from benchmarks.system.run import main

raise SystemExit(main())
