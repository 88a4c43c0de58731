"""The protocol-neutral generation core: a validated plan in (app/core/plan.py), events
out (app/core/run.py). Nothing here knows a wire format; the dialects (app/dialects) turn
requests into plans and events into responses."""
