"""What the proxy, the nodes and the client share: configuration, parsing, tokens, the store."""
