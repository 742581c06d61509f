from spatten.cli import main

raise SystemExit(main())
