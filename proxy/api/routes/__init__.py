"""The proxy's routes, one module per resource; each handler is declared once (see
``proxy.api.contract``) and ``proxy.api.app.ProxyApp`` puts them together."""
