from connected_registry.cli import main

raise SystemExit(main())
