"""The pages, one module per part of the site; ``proxy.web.app`` puts them on one Klein app."""
