"""One module per API dialect: a validator that turns the wire request (app/protocol) into
a GenerationPlan (app/core/plan.py), and a renderer that writes the run's events back in
the dialect's JSON and SSE shapes. A new dialect is one module here and its routes."""
