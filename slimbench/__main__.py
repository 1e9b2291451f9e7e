from slimbench.cli import main

raise SystemExit(main())
