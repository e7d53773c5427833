#!/usr/bin/env python3
"""Health probe for fedgate containers: GET one URL of the local process, exit 0 on a 2xx answer.

Installed in the image as `fedgate-healthcheck` and used by the image's HEALTHCHECK, by compose and by the
Kubernetes exec probes of connectors (which listen on loopback behind their TLS proxy, out of the kubelet's
reach). Standard library only, so a probe starts fast and loads nothing of the service.

    fedgate-healthcheck [URL]        default: $FEDGATE_HEALTHCHECK_URL

The gateway answers on /healthz, a connector on /v1/health. For an https URL the certificate chain is
checked against $FEDGATE_HEALTHCHECK_CA_FILE when it is set; the host name is not checked (the probe talks
to 127.0.0.1, which is not in the certificate). Without that variable the certificate is not checked: the
probe sends no credential and reads nothing but the status code.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 5.0


def _tls_context() -> ssl.SSLContext:
    ca_file = os.environ.get("FEDGATE_HEALTHCHECK_CA_FILE") or None
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False
    if ca_file is None:
        context.verify_mode = ssl.CERT_NONE
    return context


def probe(url: str) -> int:
    """Return the process exit code for one probe of `url`: 0 healthy, 1 unhealthy."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    context = _tls_context() if url.startswith("https://") else None
    # The scheme was checked just above: no file: or custom-scheme URL reaches urllib.
    request = urllib.request.Request(url, headers={"User-Agent": "fedgate-healthcheck"})  # noqa: S310
    try:
        answer = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=context)  # noqa: S310
        with answer as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"fedgate-healthcheck: {url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if 200 <= status < 300:
        return 0
    print(f"fedgate-healthcheck: {url}: HTTP {status}", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else os.environ.get("FEDGATE_HEALTHCHECK_URL", "")
    if not url.startswith(("http://", "https://")):
        print(
            "fedgate-healthcheck: give an http(s) URL, or set FEDGATE_HEALTHCHECK_URL "
            "(gateway: https://127.0.0.1:8700/healthz; connector: http://127.0.0.1:8710/v1/health)",
            file=sys.stderr,
        )
        return 2
    return probe(url)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
