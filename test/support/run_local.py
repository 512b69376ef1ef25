"""Run a LocalRunner on a JSON config until killed, or with --until-settled until there is nothing left to do."""
import json
import logging
import sys
import time

from filesync.engine.runner import LocalRunner

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    with open(sys.argv[1], encoding="utf-8") as handle:
        config = json.load(handle)
    runner = LocalRunner(config)
    if "--until-settled" in sys.argv:
        runner.run_until_settled(timeout=600)
        runner.close()
    else:
        runner.start()
        while True:
            time.sleep(3600)
