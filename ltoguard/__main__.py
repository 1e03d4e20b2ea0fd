from ltoguard.cli import main

raise SystemExit(main())
