"""`scribepod-worker`: the worker's console script. With no command it starts the RunPod worker."""

from __future__ import annotations

import sys

from scribepod_worker.__main__ import main as run_worker

USAGE = """usage: scribepod-worker [serve] [options]

  scribepod-worker                  run the RunPod worker; outside RunPod it runs ./test_input.json and exits
  scribepod-worker --test_input '{"input": {...}}'
                                    run that job instead (RunPod's own flags work: --rp_serve_api, ...)
  scribepod-worker serve [options]  a local endpoint speaking RunPod's REST API (serve --help lists its options)

Settings come from SCRIBEPOD_* variables (README, "Worker configuration"); SCRIBEPOD_MODEL=tiny.en works offline.
"""


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        from scribepod_worker.serve import main as serve

        serve(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help", "help"):
        print(USAGE, end="")  # before anything loads: a model takes seconds
        return
    run_worker()


if __name__ == "__main__":
    main()
