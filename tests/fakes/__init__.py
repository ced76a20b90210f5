"""Test doubles for tunnelauth: a mock OAuth provider, a fake $BROWSER and a fake hermes CLI.

Each script is standalone (Python standard library only) and is meant to be run as
``/usr/bin/python3 tests/fakes/<script>.py ...`` or copied to a test host:

* mock_provider.py -- mock identity provider (xAI/Spotify/Anthropic/Codex/MiniMax/Nous endpoints)
* browser.py       -- headless browser used as ``$BROWSER``
* fake_hermes.py   -- fake ``hermes`` CLI selected by ``FAKE_HERMES_VERSION``
"""
