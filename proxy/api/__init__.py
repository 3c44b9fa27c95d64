"""The proxy's HTTP face: routes, request inputs, JSON shapes, the OpenAPI document."""
