"""Real parts for tests: local servers that behave like the vendors' services egress talks to.

Each module starts and stops one kind of server on 127.0.0.0/8 (free ports, own work dir,
bounded start and stop) and is proved by its own self-test (``test_<module>.py``):

  s3.py           moto's S3 in server mode with IAM authentication on: it recomputes every
                  SigV4 signature; TLS for ``s3.aws.test`` and ``BUCKET.s3.aws.test``.
  oauth2.py       an OAuth 2.0 token endpoint (client credentials, refresh token, RFC 6749)
                  and a protected resource that takes only currently valid access tokens.
  onepassword.py  a 1Password Connect server (the published Connect API, for reading items).
  doppler.py      Doppler's v3 secrets API (service and personal tokens).
  loki.py         Loki's push endpoint (JSON), recording every stream it received.
  rsyslog.py      Debian's rsyslogd as a TCP / TLS syslog receiver writing to a file.
  browser.py      headless Chromium driven by Selenium, screenshots on failure.
  ocsf.py         ``validate_ocsf(record)`` against the OCSF schema, offline.

Shared plumbing: ``tlsfiles.py`` (certificates from the test CA), ``apiserver.py`` (an
aiohttp app in a background thread with down/up/slow/fail controls) and ``tunnel.py`` (a
plain CONNECT proxy that maps names to loopback addresses, for self-tests that need real
host names without egress in between).
"""
