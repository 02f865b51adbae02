"""Allow ``python -m emailtoken``."""

from emailtoken.cli import main

raise SystemExit(main())
