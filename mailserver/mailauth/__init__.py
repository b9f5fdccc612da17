"""Mail authentication: SPF, DKIM, ARC, DMARC and DKIM signing, all DNS through one resolver.

- ``dns``: the async resolver (servers, port and timeout from the ``[dns]`` config section).
- ``spf``: ``check_spf`` (pyspf in a worker thread, lookups answered on the event loop).
- ``dkimverify``: ``verify_dkim`` and ``verify_arc`` (dkimpy on prefetched keys).
- ``dmarccheck``: ``check_dmarc`` (the ``dmarc`` package, org domains from publicsuffixlist).
- ``inbound``: ``check_message`` — everything above for one received message, plus the
  Authentication-Results field and the disposition; what the MX daemon calls after DATA.
- ``signing``: ``sign`` / ``sign_message`` and the per-domain key loading the submission
  daemon uses.
- ``dkimpy_fast``: faster drop-ins for dkimpy's hot spots, same results (installed at import).
"""
