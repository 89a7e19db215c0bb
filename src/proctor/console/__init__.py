"""The web proof systems, served by ``proctor serve`` beside the HTTP API.

========== ============================== ==============================================
path       page                           who
========== ============================== ==============================================
``/``      index: what is here            anyone
``/console`` governance console           admins, signed in (:mod:`.session`)
``/proofs`` public proof viewer           anyone: verification runs in the browser
``/lineage`` execution lineage explorer   anyone reads the log (as ``/v1/log``); receipts
                                          for admins signed in
``/health`` infrastructure health         anyone (the numbers of ``/metrics``)
``/docs``  the API's reference            anyone (Swagger UI, served from here)
========== ============================== ==============================================

The package sits above :mod:`proctor.governor` (it reads the governor's state and calls
its operations, never the other way round); ``proctor serve`` mounts it on the
governor's application with :func:`mount`.
"""

from proctor.console.site import mount

__all__ = ["mount"]
