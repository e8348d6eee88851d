"""``python -m agents``: the training CLI (:mod:`agents.cli`); ``--help`` lists every flag."""

import signal

from agents.cli import main

try:
    main()
except KeyboardInterrupt:  # a second Ctrl-C in the instant after the run handled the first: it is saved
    raise SystemExit(128 + signal.SIGINT) from None
finally:
    # The run is over (saved, or failed with its message): a late Ctrl-C or SIGTERM during the
    # interpreter's shutdown must not turn the exit status into a traceback (exit -2 / -15).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
