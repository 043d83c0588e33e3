"""`scribepod-worker`: the worker's console script. With no command it starts the RunPod worker."""

from __future__ import annotations

import sys

from scribepod_worker.__main__ import main as run_worker


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        from scribepod_worker.serve import main as serve

        serve(sys.argv[2:])
        return
    run_worker()


if __name__ == "__main__":
    main()
