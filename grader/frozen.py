"""Imported last by the fork server's preload: the sandbox's rules, then a frozen heap.

``grader.sandbox.prepare()`` computes the sandbox's rules once, here; each worker
forked from the server only applies them.

``gc.freeze()`` moves every object loaded so far (torch, matplotlib, the worker's
modules) to the permanent generation. The workers forked from the server inherit
that: their collections no longer walk torch's hundreds of thousands of objects
(pytest's end-of-session ``gc.collect()`` in a q6 run drops from ~0.3 s to a few
ms), and pages shared with the server stay shared instead of being copied when
the collector touches them. Nothing in the permanent generation is ever freed,
which is right for modules that live as long as the process.
"""

import gc

from grader import sandbox

sandbox.prepare()  # the sandbox's rules, computed once here: each worker forked from the server only applies them
gc.freeze()
