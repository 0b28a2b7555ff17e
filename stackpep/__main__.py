from stackpep.cli import main

raise SystemExit(main())
