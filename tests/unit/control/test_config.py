"""Configuration: TOML plus TELESFU_<SECTION>_<KEY>; unknown keys and bad values name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from control.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "telesfu.toml"
    p.write_text(text)
    return p


def test_defaults_match_design():
    c = load_config(env={})
    assert (c.http.host, c.http.port, c.store.url) == ("127.0.0.1", 8080, "memory://")
    assert c.tokens.keys == {"dev": "dev-signing-secret-change-me"} and c.tokens.ttl_seconds == 600
    assert (c.media.workers, c.media.udp_port, c.media.listen_ips) == (0, 40000, ["127.0.0.1"])
    assert (c.rooms.join_early_minutes, c.rooms.join_late_minutes, c.rooms.max_participants) == (30, 30, 16)
    assert c.public_url() == "http://127.0.0.1:8080"


def test_the_example_file_loads_and_documents_every_key():
    example = REPO / "configs" / "telesfu.example.toml"
    cfg = load_config(example, env={})
    assert cfg == Config().check()  # it shows the defaults
    text = example.read_text()
    import dataclasses

    for section in dataclasses.fields(Config):
        assert f"[{section.name}]" in text
        for key in dataclasses.fields(getattr(Config(), section.name)):
            assert f"\n{key.name} =" in text, f"{section.name}.{key.name} is not documented"


def test_file_then_env_override(tmp_path):
    p = write(tmp_path, '[http]\nport = 9000\n[tokens]\nkeys = { a = "secret-aaaaaaaaaaaa", b = "secret-bbbbbbbbbbbb" }\n'
                        '[media]\nlisten_ips = ["127.0.0.1", "::1"]\n')
    c = load_config(p, env={"TELESFU_HTTP_PORT": "9100", "TELESFU_STORE_URL": "redis://127.0.0.1:6379/2",
                            "TELESFU_MEDIA_LISTEN_IPS": "127.0.0.2,127.0.0.3", "TELESFU_ROOMS_MAX_PARTICIPANTS": "8",
                            "TELESFU_AUTH_API_KEYS": '["key-one-123", "key-two-456"]', "PATH": "/bin",
                            "TELESFU_LOG_LEVEL": "DEBUG"})
    assert c.http.port == 9100 and c.store.url == "redis://127.0.0.1:6379/2"
    assert list(c.tokens.keys) == ["a", "b"]
    assert c.media.listen_ips == ["127.0.0.2", "127.0.0.3"] and c.rooms.max_participants == 8
    assert c.auth.api_keys == ["key-one-123", "key-two-456"]
    c = load_config(env={"TELESFU_TOKENS_KEYS": "new=secret-newnewnewnew,old=secret-oldoldoldold"})
    assert list(c.tokens.keys) == ["new", "old"]


@pytest.mark.parametrize("text,key", [
    ("[http]\nprot = 1\n", "http.prot"),
    ("[htp]\nport = 1\n", "htp"),
    ("[http]\nport = 'x'\n", "http.port"),
    ("[http]\nport = 70000\n", "http.port"),
    ("[http]\nport = true\n", "http.port"),
    ("[store]\nurl = 'mysql://x'\n", "store.url"),
    ("[media]\nlisten_ips = ['not-an-ip']\n", "media.listen_ips"),
    ("[media]\nannounced_ip = 'example.com'\n", "media.announced_ip"),
    ("[media]\nworkers = -1\n", "media.workers"),
    ("[tokens]\nkeys = {}\n", "tokens.keys"),
    ("[tokens]\nkeys = { k = 'short' }\n", "tokens.keys.k"),
    ("[auth]\napi_keys = []\n", "auth.api_keys"),
    ("[webhooks]\nurl = 'http://x/y'\n", "webhooks.secret"),
    ("[rooms]\nmax_participants = 1\n", "rooms.max_participants"),
    ("http = 3\n", "http"),
    ("[http\n", "--config"),
])
def test_bad_files_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text), env={})
    assert e.value.key == key and key in str(e.value)


@pytest.mark.parametrize("env,key", [({"TELESFU_HTTP_PROT": "1"}, "TELESFU_HTTP_PROT"),
                                     ({"TELESFU_NOPE": "1"}, "TELESFU_NOPE"),
                                     ({"TELESFU_HTTP_PORT": "eighty"}, "http.port"),
                                     ({"TELESFU_TOKENS_KEYS": "nokey"}, "tokens.keys")])
def test_bad_env_names_the_key(env, key):
    with pytest.raises(ConfigError) as e:
        load_config(env=env)
    assert e.value.key == key


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml", env={})



def test_ice_tcp_is_on_by_default_on_the_udp_port_numbers(tmp_path):
    media = load_config(env={}).media
    assert media.ice_tcp and media.tcp_port == 0
    assert [media.worker_tcp_port(i) for i in range(3)] == [40000, 40001, 40002]
    media = load_config(write(tmp_path, "[media]\ntcp_port = 50000\n"), env={}).media
    assert media.worker_tcp_port(2) == 50002
    media = load_config(env={"TELESFU_MEDIA_ICE_TCP": "false"}).media
    assert media.worker_tcp_port(0) is None
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "[media]\ntcp_port = 70000\n"), env={})
    assert e.value.key == "media.tcp_port"
