"""Alert and webhook to the HTTP request a receiver expects; pure, like core.

:mod:`.butler` is the Butler-compatible GET/POST/PUT payload. Imports core and
config only, and no Twisted (``tests/core/test_purity.py`` checks it).
"""
