# The doctor's remote probe. tunnelauth sends this file's text, with agent.py's, to the target
# and runs it with the target's python3; it is never imported locally. Standard library only,
# Python 3.6+. It changes nothing on the target: `hermes --version` runs with HOME and
# HERMES_HOME in a temporary directory that is removed again (that command writes ~/.hermes).
#
# argv: <this file, base64+zlib> <marker> <agent.py, base64+zlib> <config, base64 JSON>
# Prints one line: "tunnelauth-doctor " + JSON.  Modes (config["mode"]):
#   hermes   find hermes as the login would (agent.find_command), run `hermes --version`
#   tokens   the token directory, as the user who will hold the tokens (sudo -n for --as-user)
#   gateway  hermes gateway processes and systemd units, and the users they run as
import base64
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import zlib

MARK = "tunnelauth-doctor "
# Runs hermes with a throw-away HOME/HERMES_HOME as whichever user runs this shell; the
# directory goes away however the shell ends (a TERM from the stdin watch below included).
VERSION_SCRIPT = (
    'd=$(mktemp -d "${TMPDIR:-/tmp}/tunnelauth-doctor.XXXXXX") || exit 125; '
    "trap 'rm -rf \"$d\"' EXIT; trap 'exit 143' HUP INT TERM; "
    'HOME=$d HERMES_HOME=$d "$@"'
)
CHILDREN = []  # process groups to stop when tunnelauth goes away


def watch_stdin():
    """tunnelauth keeps our stdin open while it waits for the answer: EOF means it is gone
    (Ctrl-C, a timeout, a cut link), so stop whatever runs and leave."""
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL) if CHILDREN else ():
        for child in CHILDREN:
            try:
                os.killpg(child.pid, sig)
            except OSError:
                pass
        time.sleep(1)
    os._exit(143)


def load_agent():
    agent = {"__name__": "tunnelauth_agent"}
    exec(zlib.decompress(base64.b64decode(sys.argv[3])), agent)
    return agent


def run(argv, timeout):
    """(returncode, stdout, stderr); the command's whole process group dies on timeout."""
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        return 127, "", exc.strerror or str(exc)
    CHILDREN.append(child)
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(child.pid, sig)
            except OSError:
                pass
        child.wait()
        return 124, "", f"no answer within {timeout} s"
    finally:
        CHILDREN.remove(child)
    return child.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def last_line(text, default):
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else default


def sudo(user):
    return ["sudo", "-n", "-H", "-u", user, "--"]


def hermes(config, agent):
    user = config.get("as_user")
    try:
        home = agent["home_of"](user)
    except KeyError:
        return {"sudo": "no such user"}
    if user:
        rc, _, err = agent["as_user"](user, ["true"])
        if rc != 0:
            return {"sudo": last_line(err, "sudo failed")}
    name = config["hermes"]
    path = agent["find_command"](name, home, user)
    if path is None:
        looked = ["$PATH", "the login shell's PATH"]
        if name == "hermes":
            looked += list(agent["candidates"](home))
        return {"missing": looked}
    env = [f"{k}={v}" for k, v in sorted(config.get("env", {}).items())]
    argv = ["env"] + env + ["sh", "-c", VERSION_SCRIPT, "sh", path, "--version"]
    rc, out, err = run((sudo(user) if user else []) + argv, 60)
    return {"path": path, "rc": rc, "first_line": (out.strip().splitlines() or [""])[0],
            "error": last_line(err, "")}


def tokens(config, agent):
    me = pwd.getpwuid(os.geteuid())
    user = config.get("as_user")
    if user and user != me.pw_name:
        # Look as that user: their home is often 0700 to anyone else.
        again = dict(config, as_user=None, watch=False)  # its stdin is /dev/null
        payload = base64.b64encode(json.dumps(again).encode()).decode()
        # Through sh and that user's PATH: this python3 may live where they cannot read (pyenv).
        rc, out, err = run(sudo(user) + ["sh", "-c"] + config["boot"] + sys.argv[1:4] + [payload], 30)
        for line in out.splitlines():
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        return {"user": user, "sudo": last_line(err, f"sudo failed (exit {rc})")}
    where = config.get("hermes_home") or os.path.join(me.pw_dir, ".hermes")
    info = {"user": me.pw_name, "dir": where, "exists": os.path.lexists(where)}
    try:
        if not info["exists"]:
            parent = os.path.dirname(os.path.abspath(where))
            while not os.path.exists(parent):
                parent = os.path.dirname(parent)
            info.update(parent=parent, creatable=os.access(parent, os.W_OK | os.X_OK))
            return info
        st = os.stat(where)
        info.update(is_dir=stat.S_ISDIR(st.st_mode), dir_mode=stat.S_IMODE(st.st_mode),
                    dir_owned=st.st_uid == os.geteuid(), writable=os.access(where, os.W_OK | os.X_OK))
        token_file = os.path.join(where, "auth.json")
        info["file_exists"] = os.path.exists(token_file)
        if info["file_exists"]:
            st = os.stat(token_file)
            info.update(file_mode=stat.S_IMODE(st.st_mode), file_owned=st.st_uid == os.geteuid(),
                        file_rw=os.access(token_file, os.R_OK | os.W_OK))
    except OSError as exc:
        info["error"] = exc.strerror or str(exc)
    return info


def user_name(uid):
    try:
        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, ValueError):
        return str(uid)


def gateway(config, agent):
    mine = {str(os.getpid()), str(os.getppid())}
    found = {"processes": [], "units": []}
    # -ww: without a terminal ps cuts lines at 80 columns, often before "gateway".
    rc, out, err = run(["ps", "-ww", "-eo", "uid=,pid=,args="], 10)
    for row in out.splitlines():
        cols = row.split(None, 2)
        if len(cols) == 3 and cols[1] not in mine and "hermes" in cols[2] and "gateway" in cols[2]:
            found["processes"].append({"user": user_name(cols[0]), "pid": int(cols[1]), "args": cols[2]})
    if shutil.which("systemctl"):
        rc, out, _ = run(["systemctl", "list-units", "--all", "--type=service", "--no-legend",
                          "--plain", "--no-pager", "hermes*"], 10)
        units = [next((c for c in row.split() if c.endswith(".service")), "") for row in out.splitlines()]
        for unit in [u for u in units if u] if rc == 0 else []:
            rc, shown, _ = run(["systemctl", "show", "-p", "User", "-p", "ActiveState", "--", unit], 10)
            props = dict(line.partition("=")[::2] for line in shown.splitlines())
            found["units"].append({"unit": unit, "user": props.get("User") or "root",
                                   "state": props.get("ActiveState") or "unknown"})
    return found


def main():
    config = json.loads(base64.b64decode(sys.argv[4]).decode())
    if config.get("watch", True):
        threading.Thread(target=watch_stdin, daemon=True).start()
    mode = {"hermes": hermes, "tokens": tokens, "gateway": gateway}[config["mode"]]
    sys.stdout.write(MARK + json.dumps(mode(config, load_agent())) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
