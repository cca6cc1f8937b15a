"""The comparative benchmark's launcher of the Python references that run in the runner's
`--python` venv (benches/compare/run.py, `Launcher`): it imports torch, torch._dynamo (which the
first optimizer of every run imports) and DeepCTR-Torch once, then starts each run as a fork of
itself, one at a time, which saves every run the interpreter's start and these imports (seconds
each, about as long as a DeepFM run's training).

Protocol, one JSON object per line: the runner writes {"argv": [SCRIPT, ARGS...], "log": PATH,
"timeout": SECONDS}; this answers {"status": wait status, "maxrss_kib": peak RSS of the run}
once the run exits (killed after `timeout`). Nothing here runs a tensor operation, so no thread
pool exists before a fork; each run sets its own thread count and seed, as it does when started
as `python -W ignore SCRIPT ARGS...`.

A separate process rather than the runner itself, so that the runner, which starts mlet and
TorchRec as commands, stays small: a command's peak RSS (`ru_maxrss`) counts the process it was
forked from.
"""
import json
import os
import runpy
import signal
import sys
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# the answers go to the runner on the original stdout; whatever else prints (DeepCTR-Torch's
# import does) goes to stderr
ANSWERS = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)

import torch  # noqa: E402,F401
import torch._dynamo  # noqa: E402,F401

import deepctr_ref  # noqa: E402,F401  (DeepCTR-Torch and the shared modules)


def run(argv, log):
    """In the forked child: the script as `python -W ignore ARGV...` runs it. Never returns."""
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(HERE)
        warnings.simplefilter("ignore")
        sys.argv = list(argv)
        runpy.run_path(argv[0], run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main():
    out = ANSWERS
    print(json.dumps({"ready": True}), file=out, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            sys.stdin.close()
            ANSWERS.close()
            run(request["argv"], request["log"])
        deadline = time.perf_counter() + request["timeout"]
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                break
            if time.perf_counter() > deadline:
                os.kill(pid, signal.SIGKILL)
                done, status, usage = os.wait4(pid, 0)
                break
            time.sleep(0.05)
        print(json.dumps({"status": status, "maxrss_kib": usage.ru_maxrss}), file=out, flush=True)


if __name__ == "__main__":
    main()
