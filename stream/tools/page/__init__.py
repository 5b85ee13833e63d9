"""The profile page, ``portrait page``: one user's profile explained to a person, with a
"wrong verdict" control that writes corrections to ``labels.v1``.

Modules: :mod:`~stream.tools.page.follower` (the latest profile per user, read from
``profile-updates.v1``), :mod:`~stream.tools.page.records` (comment texts read back by
``topic:partition:offset``), :mod:`~stream.tools.page.view` (what the page and the JSON API show),
:mod:`~stream.tools.page.html` (the page), :mod:`~stream.tools.page.server` (HTTP).
"""
