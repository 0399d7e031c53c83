"""The alerter's parts, behind the face :mod:`alerter`: the alert types (:mod:`alerts.types`),
the channel plug-in interface and the built-in channels (:mod:`alerts.channel`,
:mod:`alerts.console`, :mod:`alerts.http_channels`, :mod:`alerts.email_channel`), secret
scrubbing (:mod:`alerts.scrubbing`), the de-dup/throttle policy (:mod:`alerts.throttle`),
background delivery (:mod:`alerts.background`) and the daemon's named triggers
(:mod:`alerts.triggers`)."""
