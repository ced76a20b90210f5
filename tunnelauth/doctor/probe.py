# The doctor's remote probe. tunnelauth sends this file's text, with agent.py's, to the target
# and runs it with the target's python3; it is never imported locally. Standard library only,
# Python 3.6+. It changes nothing on the target: `hermes --version` runs with HOME and
# HERMES_HOME in a temporary directory that is removed again (that command writes ~/.hermes).
#
# argv: <remote_lib/listeners.py + this file, base64+zlib> <marker> <agent.py, base64+zlib>
# stdin: C<config, base64 JSON> as its first line (agent.py's read_config), then nothing: it
#        stays open while tunnelauth waits, and EOF means tunnelauth is gone. The config holds
#        --remote-env values and HERMES_HOME, so it is in no command line here, nor in those of
#        what the probe starts (its re-run as --as-user gets it on a pipe, hermes as environment).
# Prints one line: "tunnelauth-doctor " + JSON: {mode: answer} for each of config["modes"]
# (one python start for all: a fleet pays for every process it starts on every target):
#   hermes   find hermes as the login would (agent.find_command); its version from the package
#            metadata beside it, or else from `hermes --version`
#   tokens   the token directory, as the user who will hold the tokens (sudo -n for --as-user)
#   gateway  hermes gateway processes and systemd units, and the users they run as
#   sockets  what LISTENs where, from the kernel's TCP tables (for the callback ports' check)
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
CHILDREN = []  # type: list[subprocess.Popen[bytes]]  # process groups to stop when tunnelauth goes away


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


def run(argv, timeout, env=None, data=None):
    """(returncode, stdout, stderr), `data` on its stdin; the command's whole process group
    dies on timeout."""
    try:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL if data is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        return 127, "", exc.strerror or str(exc)
    CHILDREN.append(child)
    try:
        out, err = child.communicate(input=data, timeout=timeout)
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
    known = metadata_version(path)
    if known:
        return {
            "path": path,
            "rc": 0,
            "first_line": "Hermes Agent v%s (from its package metadata)" % known,
        }
    rc, out, err = version_run(path, user, config.get("env", {}), agent)
    return {
        "path": path,
        "rc": rc,
        "first_line": (out.strip().splitlines() or [""])[0],
        "error": last_line(err, ""),
    }


def version_run(path, user, added, agent):
    """`hermes --version` with the --remote-env values added to its environment. Not
    `env K=V ...`: that puts them in a command line any local user can read."""
    argv = ["/bin/sh", "-c", VERSION_SCRIPT, "sh", path, "--version"]
    if not user:
        env = dict(os.environ)
        env.update(added)
        return run(argv, 60, env=env)
    if not added:
        return run(sudo(user) + argv, 60)
    # sudo resets the environment: agent.py's STUB, as that user, reads the values from a
    # pipe and execs the command with them, as a login's does.
    data = json.dumps(added).encode()
    stub = ["/bin/sh", "-c", agent["STUB_BOOT"], agent["STUB"], "p"]
    return run(sudo(user) + stub + argv, 60, data=str(len(data)).encode() + b":" + data)


def metadata_version(path):
    """hermes-agent's version from the dist-info of the environment its script runs in, without
    running it (`hermes --version` imports all of hermes and may check for updates: seconds,
    on every target of a fleet). None when that is not plain to see."""
    try:
        with open(os.path.realpath(path), "rb") as script:
            first = script.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!/"):
        return None
    interpreter = first[2:].split()[0].decode(errors="replace")
    if "python" not in os.path.basename(interpreter):
        return None
    lib = os.path.join(os.path.dirname(os.path.dirname(interpreter)), "lib")
    try:
        pythons = [d for d in os.listdir(lib) if d.startswith("python")]
    except OSError:
        return None
    for python in pythons:
        packages = os.path.join(lib, python, "site-packages")
        try:
            found = [
                d
                for d in os.listdir(packages)
                if d.lower().startswith("hermes_agent-") and d.endswith(".dist-info")
            ]
        except OSError:
            continue
        if len(found) != 1:
            continue
        try:
            with open(os.path.join(packages, found[0], "METADATA"), encoding="utf-8") as meta:
                head = dict(line.rstrip("\n").split(": ", 1) for line in meta if ": " in line[:40])
        except (OSError, ValueError):
            continue
        if head.get("Name", "").lower().replace("_", "-") == "hermes-agent" and head.get("Version"):
            return head["Version"]
    return None


def sockets(config, agent):
    """{port: addresses} of every LISTENing TCP socket; None without readable tables.
    read_tcp_tables and tcp_listeners: remote_lib/listeners.py, sent in front of this file."""
    text = read_tcp_tables()  # type: ignore[name-defined]  # noqa: F821
    if not text.strip():
        return None
    return {str(port): sorted(found) for port, found in tcp_listeners(text).items()}  # type: ignore[name-defined]  # noqa: F821


def tokens(config, agent):
    me = pwd.getpwuid(os.geteuid())
    user = config.get("as_user")
    if user and user != me.pw_name:
        # Look as that user: their home is often 0700 to anyone else.
        # Its configuration on its stdin, which then closes (so: no watch).
        again = dict(config, as_user=None, watch=False, modes=["tokens"])
        line = b"C" + base64.b64encode(json.dumps(again).encode()) + b"\n"
        # Through sh and that user's PATH: this python3 may live where they cannot read (pyenv).
        rc, out, err = run(
            sudo(user) + ["sh", "-c"] + config["boot"] + sys.argv[1:4], 30, data=line
        )
        for line in out.splitlines():
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])["tokens"]
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
        info.update(
            is_dir=stat.S_ISDIR(st.st_mode),
            dir_mode=stat.S_IMODE(st.st_mode),
            dir_owned=st.st_uid == os.geteuid(),
            writable=os.access(where, os.W_OK | os.X_OK),
        )
        token_file = os.path.join(where, "auth.json")
        info["file_exists"] = os.path.exists(token_file)
        if info["file_exists"]:
            st = os.stat(token_file)
            info.update(
                file_mode=stat.S_IMODE(st.st_mode),
                file_owned=st.st_uid == os.geteuid(),
                file_rw=os.access(token_file, os.R_OK | os.W_OK),
            )
    except OSError as exc:
        info["error"] = exc.strerror or str(exc)
    return info


def user_name(uid):
    try:
        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, ValueError):
        return str(uid)


def process_table():
    """(uid, pid, command line) of every process: from /proc where there is one (no ps to start,
    on every target of a fleet), else from ps."""
    if os.path.isdir("/proc/self"):
        rows = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as cmdline:
                    args = cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
                uid = os.stat("/proc/" + pid).st_uid
            except OSError:
                continue  # gone meanwhile, or not ours to see
            if args:
                rows.append((str(uid), pid, args))
        return rows
    # -ww: without a terminal ps cuts lines at 80 columns, often before "gateway".
    _rc, out, _err = run(["ps", "-ww", "-eo", "uid=,pid=,args="], 10)
    return [tuple(row.split(None, 2)) for row in out.splitlines() if len(row.split(None, 2)) == 3]


def gateway(config, agent):
    mine = {str(os.getpid()), str(os.getppid())}
    found = {"processes": [], "units": []}  # type: dict[str, list[dict[str, object]]]
    for uid, pid, args in process_table():
        if pid not in mine and "hermes" in args and "gateway" in args:
            found["processes"].append({"user": user_name(uid), "pid": int(pid), "args": args})
    # Only where systemd runs (sd_booted's test): elsewhere systemctl has nothing to list.
    if shutil.which("systemctl") and os.path.isdir("/run/systemd/system"):
        rc, out, _ = run(
            [
                "systemctl",
                "list-units",
                "--all",
                "--type=service",
                "--no-legend",
                "--plain",
                "--no-pager",
                "hermes*",
            ],
            10,
        )
        units = [
            next((c for c in row.split() if c.endswith(".service")), "") for row in out.splitlines()
        ]
        for unit in [u for u in units if u] if rc == 0 else []:
            rc, shown, _ = run(
                ["systemctl", "show", "-p", "User", "-p", "ActiveState", "--", unit], 10
            )
            props = dict(line.partition("=")[::2] for line in shown.splitlines())
            found["units"].append(
                {
                    "unit": unit,
                    "user": props.get("User") or "root",
                    "state": props.get("ActiveState") or "unknown",
                }
            )
    return found


def main():
    agent = load_agent()
    config, _ = agent["read_config"]()  # the first line on stdin; the watch reads what follows
    if config is None:
        sys.stderr.write("tunnelauth: the doctor's probe got no configuration on its stdin\n")
        sys.exit(125)
    if config.get("watch", True):
        threading.Thread(target=watch_stdin, daemon=True).start()
    modes = {"hermes": hermes, "tokens": tokens, "gateway": gateway, "sockets": sockets}
    answer = {mode: modes[mode](config, agent) for mode in config["modes"]}
    sys.stdout.write(MARK + json.dumps(answer) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
