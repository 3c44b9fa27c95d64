"""The web application: server-rendered pages for users, over the same services as the API."""
