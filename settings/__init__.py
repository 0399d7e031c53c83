"""The parts of the configuration behind ``config.py`` (the face every other module imports).

``sections`` holds the section models (one pydantic model per ``[table]`` of the TOML file),
``values`` the value types and URL checks they share, ``modes`` the mode and endpoints the
keys imply, ``rules`` the cross-field rules, ``problems`` the translation of pydantic errors
into one clear line each, and ``sources`` the layering of profiles, TOML, ``.env``, the
environment, stored credentials and overrides. Import :mod:`config`, not these modules.
"""
