"""`python3 -m tests.lab up` builds a lab that stays up; `down [SUFFIX]` removes it (or all)."""

from __future__ import annotations

import argparse
import sys

from tests.lab.netlab import Lab, LabError, manual_labs, state_path, sweep_stale


def describe(lab: Lab) -> str:
    laptop = f"sudo ip netns exec {lab.laptop_ns} env HOME={lab.laptop_home}"
    return f"""tunnelauth SSH lab {lab.suffix} is up (state: {state_path(lab.suffix)})
  laptop   {lab.laptop_ns:<22} 198.18.1.1              HOME {lab.laptop_home}
  bastion  {lab.bastion_ns:<22} {lab.bastion_ip}, 198.18.2.1  sshd :22, {lab.provider_ip} on lo
  target   {lab.target_ns:<22} {lab.target_ip}              sshd :22, only via ProxyJump bastion
  users    root and {lab.user} (home {lab.user_home}), key {lab.laptop_home}/.ssh/id_ed25519
  x.ai     auth.x.ai, accounts.x.ai = {lab.xai_ip} on the bastion's lo (named in laptop and target);
           lab CA {lab.tls_ca}, server cert and key beside it
  logs     {lab.root}/{{bastion,target}}/sshd.log
try:
  {laptop} ssh -F {lab.laptop_home}/.ssh/config target
  {laptop} tunnelauth spotify target
  sudo ip netns exec {lab.target_ns} runuser -u {lab.user} -- sh
tear down:
  sudo python3 -m tests.lab down {lab.suffix}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.lab", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="build a lab and leave it running")
    down = sub.add_parser("down", help="destroy one lab, or every lab made with `up`")
    down.add_argument("suffix", nargs="?")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "up":
            print(describe(Lab.create(manual=True)))
            return 0
        if args.suffix:
            labs = [Lab.load(args.suffix)] if state_path(args.suffix).exists() else []
        else:
            labs = manual_labs()
        if not labs:
            print(f"no lab {args.suffix}" if args.suffix else "no lab made with `up` is running")
        for lab in labs:
            lab.destroy()
            print(f"destroyed lab {lab.suffix}")
        for suffix in sweep_stale():
            print(f"destroyed leftovers of lab {suffix}")
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
