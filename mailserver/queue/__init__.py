"""The outbound delivery queue: storage (``store``), routing (``routing``), the SMTP client
(``smtpclient``), retry policy (``retry``), DSNs (``dsn``) and the workers (``worker``)."""
