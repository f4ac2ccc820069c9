"""The OpenAPI 3.1 description of the HTTP API, served at `/openapi.json`.

Built in code from the same constants the handlers use (status enum, roles, length limits,
reserved `params` keys), so that it cannot drift from them; `schemas.py` holds the objects,
`paths.py` one entry per route, `document.py` puts them together. A test compares the
paths with the app's route table, another fuzzes the live service against the document.
"""
