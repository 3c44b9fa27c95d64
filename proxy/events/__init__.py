"""Live events: one durable, ordered feed per user, and the two views of it.

``kinds`` names the event types; ``eventstore`` is the SQL (the ``events`` table and each
user's counter); ``emit`` records events inside the transactions that make the changes;
``hub`` wakes readers, answers the long poll and prunes; ``stream`` is one server-sent-events
response; ``sse`` the pure framing and ``inputs`` the cursor and timeout a client sends.
"""
