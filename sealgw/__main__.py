from sealgw.cli import main

raise SystemExit(main())
