"""Destinations, -J, -o and hop planning from an ssh config: pure, nothing is contacted.

Every test runs with HOME pointed at an empty temporary directory, so the developer's own
~/.ssh/config and known_hosts never leak in.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest

from tunnelauth import destination, ssh
from tunnelauth.destination import Endpoint, SshSettings, parse_endpoint, parse_jumps, parse_option
from tunnelauth.errors import HostKeyError, UsageError
from tunnelauth.ssh import Hop, plan

LOCAL_USER = "localme"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME and a known local user name for every test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(var, LOCAL_USER)
    return home


@pytest.fixture
def config_file(tmp_path: Path) -> Callable[[str], Path]:
    """Write an ssh config (dedented) to a temporary file and return its path."""

    def write(text: str, name: str = "ssh_config") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


def hops_for(
    destination: str, cfg: Path | None = None, jumps: str | None = None, **settings: object
) -> list[Hop]:
    return plan(
        parse_endpoint(destination),
        parse_jumps(jumps) if jumps is not None else None,
        SshSettings(config_file=cfg, **settings),  # type: ignore[arg-type]
    )


def names(hops: list[Hop]) -> list[str]:
    return [hop.name for hop in hops]


def usage_error(excinfo: pytest.ExceptionInfo[UsageError]) -> str:
    assert excinfo.value.exit_code == 2
    return str(excinfo.value)


# --------------------------------------------------------------------------------------
# parse_endpoint: what a destination may look like
# --------------------------------------------------------------------------------------


class TestParseEndpoint:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("host", Endpoint("host")),
            ("user@host", Endpoint("host", user="user")),
            ("user@host:2222", Endpoint("host", user="user", port=2222)),
            ("[::1]:22", Endpoint("::1", port=22)),
            ("user@[fe80::1]:22", Endpoint("fe80::1", user="user", port=22)),
            ("ssh://user@host:2200", Endpoint("host", user="user", port=2200)),
            ("ssh://host", Endpoint("host")),
            ("::1", Endpoint("::1")),
            (
                "deploy.user@bastion.example.com:65535",
                Endpoint("bastion.example.com", user="deploy.user", port=65535),
            ),
            ("host:1", Endpoint("host", port=1)),
        ],
    )
    def test_accepted(self, text: str, expected: Endpoint) -> None:
        assert parse_endpoint(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "host;rm -rf /",
            "-oProxyCommand=x",
            "user@-oProxyCommand=x",
            "-host",
            "host:0",
            "host:65536",
            "host:abc",
            "host:",
            "host:-1",
            "us er@host",
            "@host",
            "user@",
            "$(id)@host",
            "host`id`",
            "[::1",
            "[::1]x",
        ],
    )
    def test_rejected_with_usage_error_naming_the_value(self, text: str) -> None:
        with pytest.raises(UsageError) as excinfo:
            parse_endpoint(text)
        assert repr(text) in usage_error(excinfo)

    def test_rejected_port_is_named(self) -> None:
        with pytest.raises(UsageError) as excinfo:
            parse_endpoint("host:65536")
        assert "65536" in usage_error(excinfo)
        assert "1 to 65535" in str(excinfo.value)

    def test_bad_user_name_is_named(self) -> None:
        with pytest.raises(UsageError) as excinfo:
            parse_endpoint("us er@host")
        assert "'us er'" in usage_error(excinfo)

    def test_what_the_value_is_called_appears_in_the_message(self) -> None:
        with pytest.raises(UsageError, match=r"^jump host 'a;b'"):
            parse_endpoint("a;b", "jump host")

    def test_str_round_trips(self) -> None:
        for text in ("host", "user@host", "user@host:2222", "[::1]:22", "user@[fe80::1]:22"):
            assert str(parse_endpoint(text)) == text

    def test_superscript_port_is_a_usage_error_not_a_crash(self) -> None:
        with pytest.raises(UsageError):
            parse_endpoint("host:\u00b2")

    def test_non_ascii_digits_are_not_a_port(self) -> None:
        with pytest.raises(UsageError):
            parse_endpoint("host:\u0663")

    @pytest.mark.parametrize("text", ["bob\n@host", "host\n:22", "[::1\n]:22"])
    def test_embedded_newline_is_rejected(self, text: str) -> None:
        with pytest.raises(UsageError):
            parse_endpoint(text)


# --------------------------------------------------------------------------------------
# parse_jumps: -J
# --------------------------------------------------------------------------------------


class TestParseJumps:
    def test_order_is_kept(self) -> None:
        assert [e.host for e in parse_jumps("a,b,c")] == ["a", "b", "c"]

    def test_each_hop_keeps_its_user_and_port(self) -> None:
        assert parse_jumps("u1@a:2201,b,[::1]:2203") == (
            Endpoint("a", user="u1", port=2201),
            Endpoint("b"),
            Endpoint("::1", port=2203),
        )

    @pytest.mark.parametrize("text", ["none", "NONE", " None "])
    def test_none_means_no_jumps(self, text: str) -> None:
        assert parse_jumps(text) == ()

    @pytest.mark.parametrize("text", ["a,,b", "a,", ",a", "", "a, ,b"])
    def test_empty_hop_is_rejected(self, text: str) -> None:
        with pytest.raises(UsageError) as excinfo:
            parse_jumps(text)
        message = usage_error(excinfo)
        assert f"-J {text!r}" in message
        assert "empty hop" in message

    @pytest.mark.parametrize("bad", ["a;b", "-oProxyCommand=x", "host:0", "us er@host"])
    def test_each_hop_is_validated_like_a_destination(self, bad: str) -> None:
        with pytest.raises(UsageError) as excinfo:
            parse_jumps(f"ok,{bad}")
        message = usage_error(excinfo)
        assert message.startswith("jump host")
        assert repr(bad) in message


# --------------------------------------------------------------------------------------
# parse_option: -o
# --------------------------------------------------------------------------------------


class TestParseOption:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("User=bob", ("User", "bob")),
            ("User bob", ("User", "bob")),
            ("user=bob", ("User", "bob")),
            ("HOSTNAME=real.example", ("HostName", "real.example")),
            ("stricthostkeychecking accept-new", ("StrictHostKeyChecking", "accept-new")),
            ("userknownhostsfile=/tmp/kh", ("UserKnownHostsFile", "/tmp/kh")),
            ("Port = 2222", ("Port", "2222")),
            ("ProxyCommand=nc %h %p", ("ProxyCommand", "nc %h %p")),
            ("ProxyCommand=nc -X connect=x %h %p", ("ProxyCommand", "nc -X connect=x %h %p")),
        ],
    )
    def test_accepted_with_canonical_key(self, text: str, expected: tuple[str, str]) -> None:
        assert parse_option(text) == expected

    def test_every_supported_key_round_trips_in_any_case(self) -> None:
        for key in destination.OPTION_KEYS:
            value = "accept-new" if key == "StrictHostKeyChecking" else "2"
            assert parse_option(f"{key.lower()}={value}") == (key, value)
            assert parse_option(f"{key.upper()} {value}") == (key, value)

    @pytest.mark.parametrize("value", ["maybe", "2", "strict"])
    def test_a_strict_host_key_checking_value_ssh_does_not_know_is_refused(
        self, value: str
    ) -> None:
        with pytest.raises(UsageError) as excinfo:
            parse_option(f"StrictHostKeyChecking={value}")
        assert "is not yes, accept-new or no" in usage_error(excinfo)

    def test_a_keyword_ssh_does_not_know_is_refused_like_ssh_does(self) -> None:
        with pytest.raises(UsageError) as excinfo:
            parse_option("Bogus=1")
        message = usage_error(excinfo)
        assert "'Bogus'" in message and "ssh_config(5)" in message

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("identityagent=none", ("IdentityAgent", "none")),
            ("HostKeyAlias=bastion", ("HostKeyAlias", "bastion")),
            ("certificatefile ~/.ssh/c-cert.pub", ("CertificateFile", "~/.ssh/c-cert.pub")),
            ("ControlMaster=auto", ("ControlMaster", "auto")),
            ("HashKnownHosts=yes", ("HashKnownHosts", "yes")),
        ],
    )
    def test_every_ssh_config_keyword_is_accepted(
        self, text: str, expected: tuple[str, str]
    ) -> None:
        assert parse_option(text) == expected

    def test_the_first_value_given_wins_as_with_ssh(self) -> None:
        pairs = [parse_option("User=first"), parse_option("user=second"), parse_option("Port=2")]
        assert destination.first_wins(pairs) == {"User": "first", "Port": "2"}

    @pytest.mark.parametrize("text", ["fe80::1%eth0", "u@fe80::1%eth0", "[fe80::1%eth0]:2222"])
    def test_a_link_local_address_with_a_zone_parses(self, text: str) -> None:
        endpoint = destination.parse_endpoint(text)
        assert endpoint.host == "fe80::1%eth0"

    @pytest.mark.parametrize("text", ["User=", "User", "User=   ", "Port"])
    def test_missing_value_is_rejected(self, text: str) -> None:
        with pytest.raises(UsageError) as excinfo:
            parse_option(text)
        assert "missing value" in usage_error(excinfo)
        assert repr(text) in str(excinfo.value)


# --------------------------------------------------------------------------------------
# plan(): one hop, values from the config file
# --------------------------------------------------------------------------------------


class TestPlanFromConfig:
    def test_values_resolved_from_the_config(
        self, config_file: Callable[..., Path], home: Path
    ) -> None:
        cfg = config_file(
            """
            Host target
              HostName target.example.com
              User deploy
              Port 2222
              IdentityFile ~/.ssh/id_target
              IdentitiesOnly yes
              UserKnownHostsFile ~/kh/one ~/kh/two
              ConnectTimeout 7
              ServerAliveInterval 11
              ServerAliveCountMax 4
            """
        )
        [hop] = hops_for("target", cfg)
        assert hop.name == "target"
        assert (hop.host, hop.user, hop.port) == ("target.example.com", "deploy", 2222)
        assert hop.identities == (str(home / ".ssh/id_target"),)
        assert hop.identities_only is True
        assert hop.known_hosts == (home / "kh/one", home / "kh/two")
        assert (hop.connect_timeout, hop.keepalive_interval, hop.keepalive_count_max) == (7, 11, 4)
        assert hop.accept_new is False
        assert hop.proxy_command is None

    def test_defaults_without_any_config(self, home: Path) -> None:
        [hop] = hops_for("plain.example")
        assert (hop.host, hop.user, hop.port) == ("plain.example", LOCAL_USER, 22)
        assert hop.identities == ()
        assert hop.identities_only is False
        assert hop.known_hosts == (home / ".ssh/known_hosts", home / ".ssh/known_hosts2")
        assert hop.accept_new is False
        assert hop.connect_timeout == ssh.CONNECT_TIMEOUT
        assert hop.keepalive_interval == ssh.KEEPALIVE_INTERVAL
        assert hop.keepalive_count_max == ssh.KEEPALIVE_COUNT_MAX

    def test_destination_user_and_port_beat_the_config(
        self, config_file: Callable[..., Path]
    ) -> None:
        cfg = config_file(
            """
            Host target
              User deploy
              Port 2222
            """
        )
        [hop] = hops_for("me@target:2200", cfg)
        assert (hop.user, hop.port) == ("me", 2200)

    def test_identity_order_is_cli_then_option_then_config_without_duplicates(
        self, config_file: Callable[..., Path], home: Path
    ) -> None:
        cfg = config_file(
            """
            Host target
              IdentityFile ~/.ssh/from_config
              IdentityFile ~/.ssh/from_cli
            """
        )
        [hop] = hops_for(
            "target",
            cfg,
            identities=(str(home / ".ssh/from_cli"),),
            options={"IdentityFile": "~/.ssh/from_option"},
        )
        assert hop.identities == (
            str(home / ".ssh/from_cli"),
            str(home / ".ssh/from_option"),
            str(home / ".ssh/from_config"),
        )

    def test_percent_tokens_in_identity_file_are_expanded(
        self, config_file: Callable[..., Path], home: Path
    ) -> None:
        cfg = config_file(
            """
            Host target
              HostName target.example
              User deploy
              IdentityFile ~/.ssh/id_%r_%h
            """
        )
        [hop] = hops_for("target", cfg)
        assert hop.identities == (str(home / ".ssh/id_deploy_target.example"),)

    def test_host_patterns_and_first_value_wins(self, config_file: Callable[..., Path]) -> None:
        cfg = config_file(
            """
            Host *.lab !skip.lab
              User labuser
              Port 2022
            Host *
              User fallback
              Port 2999
            """
        )
        [lab] = hops_for("web.lab", cfg)
        [skipped] = hops_for("skip.lab", cfg)
        assert (lab.user, lab.port) == ("labuser", 2022)
        assert (skipped.user, skipped.port) == ("fallback", 2999)

    def test_a_broken_config_is_a_usage_error_naming_file_and_line(
        self, config_file: Callable[..., Path]
    ) -> None:
        cfg = config_file(
            """
            Host target
              ConnectTimeout soon
            """
        )
        with pytest.raises(UsageError) as excinfo:
            hops_for("target", cfg)
        message = usage_error(excinfo)
        assert str(cfg) in message
        assert "line 3" in message
        assert "soon" in message

    def test_missing_config_file_is_a_usage_error(self, tmp_path: Path) -> None:
        missing = tmp_path / "nope"
        with pytest.raises(UsageError) as excinfo:
            hops_for("target", missing)
        assert str(missing) in usage_error(excinfo)


class TestWhichConfigIsRead:
    def test_home_config_is_read_without_f(self, home: Path) -> None:
        (home / ".ssh").mkdir()
        (home / ".ssh/config").write_text("Host target\n  HostName from-home.example\n")
        [hop] = hops_for("target")
        assert hop.host == "from-home.example"

    def test_home_config_is_not_read_when_f_is_given(
        self, home: Path, config_file: Callable[..., Path]
    ) -> None:
        (home / ".ssh").mkdir()
        (home / ".ssh/config").write_text(
            "Host *\n  HostName from-home.example\n  User homeuser\n  Port 2999\n"
        )
        cfg = config_file("Host other\n  User other\n")
        [hop] = hops_for("target", cfg)
        assert (hop.host, hop.user, hop.port) == ("target", LOCAL_USER, 22)


class TestMatchAndInclude:
    def test_include_with_an_absolute_path(self, config_file: Callable[..., Path]) -> None:
        included = config_file(
            "Host target\n  HostName included.example\n  User inc\n", name="included"
        )
        cfg = config_file(f"Include {included}\n")
        [hop] = hops_for("target", cfg)
        assert (hop.host, hop.user) == ("included.example", "inc")

    def test_include_relative_to_home_ssh_with_a_glob(
        self, config_file: Callable[..., Path], home: Path
    ) -> None:
        (home / ".ssh/conf.d").mkdir(parents=True)
        (home / ".ssh/conf.d/10-target.conf").write_text("Host target\n  Port 2345\n")
        cfg = config_file("Include conf.d/*.conf\n")
        [hop] = hops_for("target", cfg)
        assert hop.port == 2345

    def test_include_of_a_missing_file_is_fine(self, config_file: Callable[..., Path]) -> None:
        cfg = config_file("Include /nonexistent/tunnelauth-test/*.conf\nHost target\n  Port 2346\n")
        [hop] = hops_for("target", cfg)
        assert hop.port == 2346

    def test_match_host_sees_the_resolved_host_name(self, config_file: Callable[..., Path]) -> None:
        cfg = config_file(
            """
            Host short
              HostName long.example.com
            Match host *.example.com
              User matched
            """
        )
        [hop] = hops_for("short", cfg)
        assert (hop.host, hop.user) == ("long.example.com", "matched")

    def test_match_user_and_originalhost(self, config_file: Callable[..., Path]) -> None:
        cfg = config_file(
            """
            Match originalhost target user admin
              Port 2200
            Match all
              Port 2999
            """
        )
        assert hops_for("admin@target", cfg)[0].port == 2200
        assert hops_for("other@target", cfg)[0].port == 2999
        assert hops_for("target", cfg, login="admin")[0].port == 2200

    def test_match_localuser(self, config_file: Callable[..., Path]) -> None:
        cfg = config_file(f"Match localuser {LOCAL_USER}\n  User via-localuser\n")
        assert hops_for("target", cfg)[0].user == "via-localuser"

    def test_match_final_applies(self, config_file: Callable[..., Path]) -> None:
        cfg = config_file(
            """
            Host target
              HostName target.example
            Match final host target.example
              Port 2222
            """
        )
        assert hops_for("target", cfg)[0].port == 2222


# --------------------------------------------------------------------------------------
# plan(): ProxyJump chains and -J
# --------------------------------------------------------------------------------------


CHAIN = """
    Host target
      HostName target.internal
      User tuser
      ProxyJump mid
    Host mid
      HostName mid.internal
      User muser
      Port 2201
      ProxyJump edge
    Host edge
      HostName edge.example.com
      User euser
      Port 2200
    Host a
      HostName a.example.com
      ProxyJump edge
    Host b
      HostName b.example.com
      ProxyJump nowhere
"""


class TestJumpChains:
    def test_config_proxyjump_chain_is_followed_in_order(
        self, config_file: Callable[..., Path]
    ) -> None:
        hops = hops_for("target", config_file(CHAIN))
        assert names(hops) == ["edge", "mid", "target"]
        assert [(h.host, h.user, h.port) for h in hops] == [
            ("edge.example.com", "euser", 2200),
            ("mid.internal", "muser", 2201),
            ("target.internal", "tuser", 22),
        ]

    def test_proxyjump_list_in_the_config(self, config_file: Callable[..., Path]) -> None:
        cfg = config_file(
            """
            Host target
              ProxyJump j1,u2@j2:2202
            """
        )
        hops = hops_for("target", cfg)
        assert names(hops) == ["j1", "u2@j2:2202", "target"]
        assert (hops[1].user, hops[1].port) == ("u2", 2202)

    def test_dash_j_overrides_the_config_but_a_jumps_own_proxyjump_is_honoured(
        self, config_file: Callable[..., Path]
    ) -> None:
        # target's config says `ProxyJump mid`; -J a,b replaces that. b is reached through a
        # (so b's own `ProxyJump nowhere` is not used), and a is reached through its own
        # config ProxyJump, edge: what OpenSSH does.
        hops = hops_for("target", config_file(CHAIN), jumps="a,b")
        assert names(hops) == ["edge", "a", "b", "target"]
        assert [h.host for h in hops] == [
            "edge.example.com",
            "a.example.com",
            "b.example.com",
            "target.internal",
        ]

    def test_dash_j_without_config_jumps(self, config_file: Callable[..., Path]) -> None:
        cfg = config_file("Host target\n  ProxyJump mid\n")
        assert names(hops_for("target", cfg, jumps="x,y")) == ["x", "y", "target"]

    def test_dash_j_none_disables_the_config_proxyjump(
        self, config_file: Callable[..., Path]
    ) -> None:
        assert names(hops_for("target", config_file(CHAIN), jumps="none")) == ["target"]

    def test_config_proxyjump_none(self, config_file: Callable[..., Path]) -> None:
        cfg = config_file("Host target\n  ProxyJump none\nHost *\n  ProxyJump edge\n")
        assert names(hops_for("target", cfg)) == ["target"]

    def test_dash_o_proxyjump_applies_to_the_destination(
        self, config_file: Callable[..., Path]
    ) -> None:
        hops = hops_for("target", config_file(CHAIN), options={"ProxyJump": "a"})
        assert names(hops) == ["edge", "a", "target"]

    def test_bad_proxyjump_in_the_config_is_a_usage_error(
        self, config_file: Callable[..., Path]
    ) -> None:
        cfg = config_file("Host target\n  ProxyJump ok,bad;host\n")
        with pytest.raises(UsageError) as excinfo:
            hops_for("target", cfg)
        assert "'bad;host'" in usage_error(excinfo)

    @pytest.mark.parametrize(
        "text",
        [
            "Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n",
            "Host a\n  ProxyJump a\n",
            "Host a\n  ProxyJump b\nHost b\n  ProxyJump c\nHost c\n  ProxyJump a\n",
        ],
        ids=["a-b-a", "self", "a-b-c-a"],
    )
    def test_proxyjump_loop_is_a_usage_error(
        self, config_file: Callable[..., Path], text: str
    ) -> None:
        with pytest.raises(UsageError) as excinfo:
            hops_for("a", config_file(text))
        message = usage_error(excinfo)
        assert "ProxyJump" in message
        assert "loop" in message

    def test_a_loop_reached_through_dash_j_is_also_caught(
        self, config_file: Callable[..., Path]
    ) -> None:
        cfg = config_file("Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n")
        with pytest.raises(UsageError, match="loop"):
            hops_for("target", cfg, jumps="a")


# --------------------------------------------------------------------------------------
# plan(): which command-line settings reach which hop
# --------------------------------------------------------------------------------------


class TestCommandLineScope:
    def test_dash_l_and_dash_p_apply_to_the_destination_only(
        self, config_file: Callable[..., Path]
    ) -> None:
        cfg = config_file("Host target\n  ProxyJump jump\n")
        jump, target = hops_for("target", cfg, login="cliuser", port=2022)
        assert (target.user, target.port) == ("cliuser", 2022)
        assert (jump.user, jump.port) == (LOCAL_USER, 22)

    def test_dash_l_and_dash_p_beat_the_config(self, config_file: Callable[..., Path]) -> None:
        cfg = config_file("Host target\n  User cfguser\n  Port 2999\n")
        [hop] = hops_for("target", cfg, login="cliuser", port=2022)
        assert (hop.user, hop.port) == ("cliuser", 2022)

    def test_destination_only_options(self, config_file: Callable[..., Path]) -> None:
        cfg = config_file(
            """
            Host jump
              HostName jump.example
            Host target
              HostName target.example
              ProxyJump jump
            """
        )
        jump, target = hops_for(
            "target",
            cfg,
            options={"HostName": "override.example", "User": "ouser", "Port": "2023"},
        )
        assert (target.host, target.user, target.port) == ("override.example", "ouser", 2023)
        assert (jump.host, jump.user, jump.port) == ("jump.example", LOCAL_USER, 22)

    def test_dash_o_proxyjump_is_not_applied_to_jump_hosts(
        self, config_file: Callable[..., Path]
    ) -> None:
        # If it were, the jump host would be asked to jump through itself.
        hops = hops_for("target", None, jumps="j1", options={"ProxyJump": "zzz"})
        assert names(hops) == ["j1", "target"]

    def test_per_hop_options_reach_every_hop(
        self, config_file: Callable[..., Path], home: Path
    ) -> None:
        cfg = config_file(CHAIN)
        hops = hops_for(
            "target",
            cfg,
            options={
                "UserKnownHostsFile": "~/kh/a ~/kh/b",
                "StrictHostKeyChecking": "accept-new",
                "IdentityFile": "~/keys/id_all",
                "IdentitiesOnly": "yes",
                "ConnectTimeout": "3",
                "ServerAliveInterval": "9",
                "ServerAliveCountMax": "2",
            },
        )
        assert names(hops) == ["edge", "mid", "target"]
        for hop in hops:
            assert hop.known_hosts == (home / "kh/a", home / "kh/b"), hop.name
            assert hop.accept_new is True, hop.name
            assert hop.identities == (str(home / "keys/id_all"),), hop.name
            assert hop.identities_only is True, hop.name
            assert (hop.connect_timeout, hop.keepalive_interval, hop.keepalive_count_max) == (
                3,
                9,
                2,
            ), hop.name

    def test_dash_i_reaches_every_hop(self, config_file: Callable[..., Path]) -> None:
        hops = hops_for("target", config_file(CHAIN), identities=("/keys/id_cli",))
        assert all(hop.identities[0] == "/keys/id_cli" for hop in hops)

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("ConnectTimeout", "soon"),
            ("ConnectTimeout", "-1"),
            ("ServerAliveInterval", "x"),
            ("Port", "99999"),
        ],
    )
    def test_bad_option_values_are_usage_errors(self, key: str, value: str) -> None:
        with pytest.raises(UsageError) as excinfo:
            hops_for("target", options={key: value})
        assert repr(value) in usage_error(excinfo)

    def test_dash_o_hostname_reaches_a_config_proxycommand(
        self, config_file: Callable[..., Path]
    ) -> None:
        cfg = config_file("Host target\n  HostName cfg.example\n  ProxyCommand nc %h %p\n")
        [hop] = hops_for("target", cfg, options={"HostName": "real.example"})
        assert hop.host == "real.example"
        assert hop.proxy_command == "nc real.example 22"

    def test_dash_o_proxycommand_tokens_are_expanded(self) -> None:
        [hop] = hops_for("u@target:2200", options={"ProxyCommand": "nc -X connect %h %p # %r"})
        assert hop.proxy_command == "nc -X connect target 2200 # u"


# --------------------------------------------------------------------------------------
# plan(): host-key policy
# --------------------------------------------------------------------------------------


class TestHostKeyPolicy:
    @pytest.mark.parametrize(
        ("value", "accept_new"),
        [("yes", False), ("accept-new", True), ("no", True), ("YES", False), ("Accept-New", True)],
    )
    def test_strict_host_key_checking_option(self, value: str, accept_new: bool) -> None:
        [hop] = hops_for("target", options={"StrictHostKeyChecking": value})
        assert hop.accept_new is accept_new

    @pytest.mark.parametrize("value", ["yes", "accept-new", "no"])
    def test_accept_new_flag_turns_it_on(self, value: str) -> None:
        [hop] = hops_for("target", options={"StrictHostKeyChecking": value}, accept_new=True)
        assert hop.accept_new is True

    def test_accept_new_flag_reaches_every_hop(self, config_file: Callable[..., Path]) -> None:
        hops = hops_for("target", config_file(CHAIN), accept_new=True)
        assert [h.accept_new for h in hops] == [True, True, True]

    def test_config_accept_new_is_honoured_per_host(self, config_file: Callable[..., Path]) -> None:
        cfg = config_file(
            """
            Host target
              StrictHostKeyChecking accept-new
              ProxyJump jump
            """
        )
        jump, target = hops_for("target", cfg)
        assert target.accept_new is True
        assert jump.accept_new is False

    def test_command_line_beats_the_config(self, config_file: Callable[..., Path]) -> None:
        cfg = config_file("Host target\n  StrictHostKeyChecking accept-new\n")
        [hop] = hops_for("target", cfg, options={"StrictHostKeyChecking": "yes"})
        assert hop.accept_new is False

    def test_unknown_strict_value_is_a_usage_error(self) -> None:
        with pytest.raises(UsageError) as excinfo:
            hops_for("target", options={"StrictHostKeyChecking": "maybe"})
        assert "'maybe'" in usage_error(excinfo)

    @pytest.mark.parametrize("value", ["none", "NONE", "/tmp/kh none"])
    def test_user_known_hosts_file_none_is_refused(self, value: str) -> None:
        with pytest.raises(UsageError) as excinfo:
            hops_for("target", options={"UserKnownHostsFile": value})
        assert "always checks" in usage_error(excinfo)

    def test_user_known_hosts_file_none_in_the_config_never_disables_checks(
        self, config_file: Callable[..., Path], home: Path
    ) -> None:
        # asyncssh turns `none` into an empty list; tunnelauth must still check some file.
        cfg = config_file("Host target\n  UserKnownHostsFile none\n")
        [hop] = hops_for("target", cfg)
        assert hop.known_hosts == (home / ".ssh/known_hosts", home / ".ssh/known_hosts2")


# --------------------------------------------------------------------------------------
# _known_hosts: what a hop trusts
# --------------------------------------------------------------------------------------


def _key_line(names_field: str) -> tuple[str, asyncssh.SSHKey]:
    key = asyncssh.generate_private_key("ssh-ed25519").convert_to_public()
    algo, blob = key.export_public_key("openssh").decode().split()[:2]
    return f"{names_field} {algo} {blob}\n", key


def _hop_with(known_hosts: tuple[Path, ...]) -> Hop:
    [hop] = hops_for("target")
    return Hop(**{**hop.__dict__, "known_hosts": known_hosts})


def _trusted(known: asyncssh.SSHKnownHosts, host: str, port: int | None = None) -> list[bytes]:
    return [k.public_data for k in known.match(host, "", port)[0]]


class TestKnownHosts:
    def test_files_are_merged(self, tmp_path: Path) -> None:
        line_a, key_a = _key_line("alpha.example")
        line_b, key_b = _key_line("beta.example,[beta.example]:2222")
        (tmp_path / "kh1").write_text(line_a)
        (tmp_path / "kh2").write_text(line_b.rstrip("\n"))  # no final newline: still merged
        known = ssh._known_hosts(_hop_with((tmp_path / "kh1", tmp_path / "kh2")))
        assert _trusted(known, "alpha.example") == [key_a.public_data]
        assert _trusted(known, "beta.example") == [key_b.public_data]
        assert _trusted(known, "beta.example", 2222) == [key_b.public_data]
        assert _trusted(known, "gamma.example") == []

    def test_same_host_in_two_files_trusts_both_keys(self, tmp_path: Path) -> None:
        line_1, key_1 = _key_line("dup.example")
        line_2, key_2 = _key_line("dup.example")
        (tmp_path / "kh1").write_text(line_1)
        (tmp_path / "kh2").write_text(line_2)
        known = ssh._known_hosts(_hop_with((tmp_path / "kh1", tmp_path / "kh2")))
        assert sorted(_trusted(known, "dup.example")) == sorted(
            [key_1.public_data, key_2.public_data]
        )

    def test_a_missing_file_is_fine(self, tmp_path: Path) -> None:
        line, key = _key_line("alpha.example")
        (tmp_path / "kh").write_text(line)
        known = ssh._known_hosts(
            _hop_with((tmp_path / "missing", tmp_path / "kh", tmp_path / "gone/too"))
        )
        assert _trusted(known, "alpha.example") == [key.public_data]

    def test_all_files_missing_trusts_nothing(self, tmp_path: Path) -> None:
        known = ssh._known_hosts(_hop_with((tmp_path / "missing",)))
        assert _trusted(known, "alpha.example") == []

    def test_default_file_comes_from_home(self, home: Path) -> None:
        line, key = _key_line("alpha.example")
        (home / ".ssh").mkdir()
        (home / ".ssh/known_hosts").write_text(line)
        [hop] = hops_for("alpha.example")
        assert _trusted(ssh._known_hosts(hop), "alpha.example") == [key.public_data]

    def test_unreadable_path_is_a_host_key_error_naming_it(self, tmp_path: Path) -> None:
        directory = tmp_path / "a_directory"
        directory.mkdir()
        with pytest.raises(HostKeyError) as excinfo:
            ssh._known_hosts(_hop_with((directory,)))
        assert str(directory) in str(excinfo.value)

    def test_a_malformed_line_does_not_crash(self, tmp_path: Path) -> None:
        line, key = _key_line("alpha.example")
        kh = tmp_path / "kh"
        kh.write_text("stray-text-without-a-key\n" + line)
        try:
            known = ssh._known_hosts(_hop_with((kh,)))
        except HostKeyError as exc:  # acceptable: a clear error naming the file
            assert str(kh) in str(exc)  # noqa: PT017 - either outcome is valid here
        else:  # also acceptable: the bad line is skipped like OpenSSH does
            assert _trusted(known, "alpha.example") == [key.public_data]
