from chatrelay.cli import main

raise SystemExit(main())
