import sys

from eval.e2e.run import main

sys.exit(main())
